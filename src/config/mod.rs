//! One configuration struct, loaded from defaults, then a TOML file, then the
//! environment. Validation happens once, at start, and every failure names the
//! setting it is about.

mod cdn;
mod groups;
mod namespace;
mod parse;
pub mod settings;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::userid::{JwtSettings, UserIdPolicy, UserIdSource};
pub use cdn::CdnConfig;
pub use groups::{
    DatabaseConfig, DownloadConfig, LifecycleConfig, PersistConfig, PersistMode, RateConfig,
    RewriteConfig, S3Config, SigningConfig, SigningMode, StorageBackend, StorageConfig,
    VariantsConfig, WebhookConfig,
};
pub use parse::PathPattern;
use parse::Raw;

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &str, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: url::Url,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `host[:port]` as the Host header should carry it.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub upstream: Upstream,
    pub upstream_timeout: Duration,
    pub listen_addr: String,
    pub metrics_addr: String,
    pub public_base_url: Option<String>,
    pub worker_threads: usize,
    pub hosting_enabled: bool,
    pub rewrite: RewriteConfig,
    pub webhook: WebhookConfig,
    pub signing: SigningConfig,
    pub user_id: UserIdPolicy,
    pub persist: PersistConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub download: DownloadConfig,
    pub serve_rate: RateConfig,
    pub lifecycle: LifecycleConfig,
    pub variants: VariantsConfig,
    pub cdn: CdnConfig,
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub shutdown_drain: Duration,
    /// The raw values after layering, for `check-config`.
    pub raw: BTreeMap<String, String>,
}

impl Config {
    /// Defaults, then the TOML file (if any), then the process environment.
    pub fn load(toml_path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::load_from(toml_path, &env)
    }

    pub fn load_from(
        toml_path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut raw = Raw::defaults();
        if let Some(path) = toml_path {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?;
            raw.apply_toml(&text)?;
        }
        raw.apply_env(env);
        Config::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Config, ConfigError> {
        let upstream = parse_upstream(&raw)?;
        let listen_addr = match raw.get("LISTEN_ADDR") {
            "" => match raw.get("PORT") {
                "" => "0.0.0.0:8080".to_string(),
                _ => format!("0.0.0.0:{}", raw.parse::<u16>("PORT")?),
            },
            addr => addr.to_string(),
        };
        parse::socket_addr("LISTEN_ADDR", &listen_addr)?;
        let metrics_addr = raw.get("METRICS_ADDR").to_string();
        parse::socket_addr("METRICS_ADDR", &metrics_addr)?;
        let storage = groups::storage(&raw)?;
        let database = namespace::database(&raw, &storage)?;
        let cfg = Config {
            upstream,
            upstream_timeout: raw.millis("UPSTREAM_TIMEOUT_MS")?,
            listen_addr,
            metrics_addr,
            public_base_url: parse_public_base(&raw)?,
            worker_threads: match raw.parse::<usize>("WORKER_THREADS")? {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            hosting_enabled: raw.bool("IMAGE_HOSTING_ENABLED")?,
            rewrite: groups::rewrite(&raw)?,
            webhook: groups::webhook(&raw)?,
            signing: groups::signing(&raw)?,
            user_id: parse_user_id(&raw)?,
            persist: groups::persist(&raw)?,
            storage,
            database,
            download: groups::download(&raw)?,
            serve_rate: groups::serve_rate(&raw)?,
            lifecycle: groups::lifecycle(&raw)?,
            variants: groups::variants(&raw)?,
            cdn: cdn::cdn(&raw)?,
            admin_token: admin_token(&raw)?,
            log_format: match raw.get("LOG_FORMAT") {
                "json" => LogFormat::Json,
                "pretty" => LogFormat::Pretty,
                "" => {
                    use std::io::IsTerminal;
                    if std::io::stderr().is_terminal() {
                        LogFormat::Pretty
                    } else {
                        LogFormat::Json
                    }
                }
                other => {
                    return Err(ConfigError::new(
                        "LOG_FORMAT",
                        format!("{other:?} is not json or pretty"),
                    ))
                }
            },
            shutdown_grace: Duration::from_secs(raw.parse::<u64>("SHUTDOWN_GRACE_SECS")?),
            shutdown_drain: Duration::from_secs(raw.parse::<u64>("SHUTDOWN_DRAIN_SECS")?),
            raw: raw.into_map(),
        };
        Ok(cfg)
    }

    /// The effective configuration, one `NAME = "value"` line each, secrets
    /// redacted. This is valid TOML, so it can seed a config file.
    pub fn describe(&self) -> String {
        let mut out = namespace::in_effect(&self.raw);
        for s in settings::SETTINGS {
            let value = self.raw.get(s.name).map(String::as_str).unwrap_or("");
            let shown = if s.secret && !value.is_empty() {
                "<redacted>".to_string()
            } else if s.name.ends_with("DATABASE_URL") {
                redact_url(value)
            } else if s.name == "IMAGE_USER_ID_FROM" {
                // The list in effect, default included: what decides whose
                // images are whose should never show as "".
                self.user_id.describe_sources()
            } else {
                value.to_string()
            };
            out.push_str(&format!("{} = {:?}\n", s.name, shown));
        }
        out
    }

    /// Is this request path one whose JSON response is rewritten?
    pub fn is_rewrite_path(&self, path: &str) -> bool {
        self.hosting_enabled && self.rewrite.paths.iter().any(|p| p.matches(path))
    }
}

/// A connection URL with its password replaced, for output and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn parse_upstream(raw: &Raw) -> Result<Upstream, ConfigError> {
    let name = "UPSTREAM_URL";
    let url = url::Url::parse(raw.get(name))
        .map_err(|e| ConfigError::new(name, format!("{:?} is not a URL: {e}", raw.get(name))))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => {
            return Err(ConfigError::new(
                name,
                format!("scheme {other:?} is not http or https"),
            ))
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| ConfigError::new(name, "has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ConfigError::new(name, "has no port"))?;
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    Ok(Upstream {
        url,
        host,
        port,
        tls,
        authority,
    })
}

/// An http(s) URL with a host, or an error naming the setting.
fn parse_http_url(name: &str, v: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(v)
        .map_err(|e| ConfigError::new(name, format!("{v:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(name, "must be an http(s) URL with a host"));
    }
    Ok(url)
}

fn parse_public_base(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let name = "PUBLIC_BASE_URL";
    match raw.get(name) {
        "" => Ok(None),
        v => {
            parse_http_url(name, v)?;
            Ok(Some(v.trim_end_matches('/').to_string()))
        }
    }
}

/// The admin token guards deleting any user's images: one short enough to
/// guess (or to brute-force offline from a leaked session cookie) is
/// refused at start.
const MIN_ADMIN_TOKEN_CHARS: usize = 32;

fn admin_token(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let token = raw.optional("ADMIN_TOKEN");
    match &token {
        Some(t) if t.chars().count() < MIN_ADMIN_TOKEN_CHARS => Err(ConfigError::new(
            "ADMIN_TOKEN",
            format!(
                "is {} characters; it needs at least {MIN_ADMIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32`)",
                t.chars().count()
            ),
        )),
        _ => Ok(token),
    }
}

fn parse_user_id(raw: &Raw) -> Result<UserIdPolicy, ConfigError> {
    let header = raw.get("IMAGE_USER_ID_HEADER").to_ascii_lowercase();
    let list = match raw.get("IMAGE_USER_ID_FROM") {
        "" => format!("request-header:{header},body:user_id,body:userId,anonymous"),
        v => v.to_string(),
    };
    let sources =
        UserIdSource::parse_list(&list).map_err(|m| ConfigError::new("IMAGE_USER_ID_FROM", m))?;
    let jwt = JwtSettings {
        secret: namespace::jwt_secret(raw),
        public_key: raw.optional("JWT_PUBLIC_KEY"),
        jwks_path: raw.optional("JWT_JWKS_PATH"),
        audience: raw.optional("JWT_AUDIENCE"),
        issuer: raw.optional("JWT_ISSUER"),
        require_exp: raw.bool("JWT_REQUIRE_EXP")?,
    };
    let policy = UserIdPolicy::new(sources, raw.bool("IMAGE_USER_ID_REQUIRED")?, jwt)
        .map_err(|(setting, m)| ConfigError::new(setting, m))?;
    if raw.bool("IMAGE_USER_ID_TRUSTED_ONLY")? {
        policy
            .check_trusted_only()
            .map_err(|m| ConfigError::new("IMAGE_USER_ID_FROM", m))?;
    }
    Ok(policy)
}

#[cfg(test)]
mod tests;
