//! Settings whose plain names Studio API's own framework reads too
//! (`DATABASE_URL`, `JWT_SECRET`). On Railway, shared variables reach every
//! service, so permaproxy would silently use Studio API's database and
//! secret: a `PERMAPROXY_` name wins when set. And on Postgres,
//! permaproxy's tables live in their own schema, so one database can hold
//! both apps.

use std::collections::BTreeMap;

use super::groups::{DatabaseConfig, StorageConfig};
use super::parse::Raw;
use super::ConfigError;

/// (preferred, fallback) pairs.
const DATABASE: (&str, &str) = ("PERMAPROXY_DATABASE_URL", "DATABASE_URL");
const JWT: (&str, &str) = ("PERMAPROXY_JWT_SECRET", "JWT_SECRET");

/// The first of the pair that is set, and its name.
fn pick<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    (preferred, fallback): (&'static str, &'static str),
) -> Option<(&'static str, &'a str)> {
    [preferred, fallback].into_iter().find_map(|name| {
        get(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v.trim()))
    })
}

pub(super) fn jwt_secret(raw: &Raw) -> Option<String> {
    pick(|n| Some(raw.get(n)), JWT).map(|(_, v)| v.to_string())
}

/// `PERMAPROXY_DATABASE_URL`, else `DATABASE_URL`, else an SQLite file
/// inside the storage folder.
pub(super) fn database(raw: &Raw, storage: &StorageConfig) -> Result<DatabaseConfig, ConfigError> {
    let (url_from, url) = match pick(|n| Some(raw.get(n)), DATABASE) {
        None => (
            "IMAGE_STORAGE_PATH",
            format!("sqlite://{}", storage.path.join("permaproxy.db").display()),
        ),
        Some((name, v)) if crate::repo::Dialect::from_url(v).is_some() => (name, v.to_string()),
        Some((name, v)) => {
            return Err(ConfigError::new(
                name,
                format!(
                    "{:?} is neither sqlite://PATH nor postgres://…",
                    crate::config::redact_url(v)
                ),
            ))
        }
    };
    Ok(DatabaseConfig {
        url,
        max_connections: raw.positive::<u32>("DATABASE_MAX_CONNECTIONS")?,
        url_from,
        schema: schema(raw.get("PERMAPROXY_DB_SCHEMA"))?,
    })
}

/// A plain lowercase identifier, so it needs no quoting rules of its own
/// and means the same to every tool that reads it.
fn schema(v: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !v.starts_with("pg_");
    if !ok {
        return Err(ConfigError::new(
            "PERMAPROXY_DB_SCHEMA",
            format!(
                "{v:?} is not a schema name: lowercase letters, digits and _, at most 63, not pg_…"
            ),
        ));
    }
    Ok(v.to_string())
}

/// `check-config`'s header: which of each pair is in effect.
pub(super) fn in_effect(raw: &BTreeMap<String, String>) -> String {
    let get = |n: &str| raw.get(n).map(String::as_str);
    let line = |what: &str, pair: (&'static str, &'static str), none: &str| match pick(get, pair) {
        Some((name, _)) => {
            let shadowed = name == pair.0 && pick(get, (pair.1, pair.1)).is_some();
            let ignored = match shadowed {
                true => format!(" ({} is set too, and ignored)", pair.1),
                false => String::new(),
            };
            format!("# {what}: {name} is in effect{ignored}\n")
        }
        None => format!(
            "# {what}: {none} (neither {} nor {} is set)\n",
            pair.0, pair.1
        ),
    };
    let mut out = line("database", DATABASE, "the embedded SQLite file");
    out.push_str(&line("JWT secret", JWT, "none"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["permaproxy", "public", "_pp2", "a"] {
            assert_eq!(schema(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "Permaproxy",
            "2pp",
            "pp-x",
            "pp\"; drop",
            "pg_temp",
            &"a".repeat(64),
        ] {
            assert_eq!(
                schema(bad).unwrap_err().setting,
                "PERMAPROXY_DB_SCHEMA",
                "{bad}"
            );
        }
    }
}
