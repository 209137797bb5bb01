//! One configuration struct, loaded from defaults, then a TOML file, then the
//! environment. Validation happens once, at start, and every failure names the
//! setting it is about.

mod parse;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sources::SourceMatcher;
use crate::userid::{JwtSettings, UserIdPolicy, UserIdSource};
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
pub enum PersistMode {
    BeforeResponse,
    Background,
    OnFirstHit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Disk,
    S3,
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
pub struct S3Config {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub force_path_style: bool,
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
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
    pub rewrite_paths: Vec<PathPattern>,
    pub sources: SourceMatcher,
    pub rewrite_max_body: usize,
    pub max_sources_per_response: usize,
    pub user_id: UserIdPolicy,
    pub persist_mode: PersistMode,
    pub persist_timeout: Duration,
    pub storage_backend: StorageBackend,
    pub storage_path: PathBuf,
    pub memory_cache_bytes: u64,
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub download_retries: u32,
    pub download_concurrency: usize,
    pub download_connect_timeout: Duration,
    pub download_timeout: Duration,
    pub rate_per_sec: f64,
    pub burst: f64,
    pub rate_v6_prefix: u8,
    pub trust_forwarded_for: bool,
    pub max_age: Duration,
    pub per_user_limit: usize,
    pub storage_max_bytes: Option<u64>,
    pub min_free_bytes: u64,
    pub cleanup_interval: Duration,
    pub cache_revalidate: Duration,
    pub admin_token: Option<String>,
    pub s3: Option<S3Config>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
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
        let persist_mode = match raw.get("IMAGE_PERSIST_MODE") {
            "before_response" => PersistMode::BeforeResponse,
            "background" => PersistMode::Background,
            "on_first_hit" => PersistMode::OnFirstHit,
            other => {
                return Err(ConfigError::new(
                    "IMAGE_PERSIST_MODE",
                    format!("{other:?} is not one of before_response, background, on_first_hit"),
                ))
            }
        };
        let storage_backend = match raw.get("IMAGE_STORAGE_BACKEND") {
            "disk" => StorageBackend::Disk,
            "s3" => StorageBackend::S3,
            other => {
                return Err(ConfigError::new(
                    "IMAGE_STORAGE_BACKEND",
                    format!("{other:?} is not one of disk, s3"),
                ))
            }
        };
        // Parsed for the disk backend too when a bucket is set, so
        // `migrate --to s3` can use it.
        let s3 = match (storage_backend, raw.get("S3_BUCKET")) {
            (StorageBackend::S3, _) => Some(parse_s3(&raw)?),
            (StorageBackend::Disk, "") => None,
            (StorageBackend::Disk, _) => Some(parse_s3(&raw)?),
        };
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
            rewrite_paths: parse::path_patterns(
                "IMAGE_REWRITE_PATHS",
                raw.get("IMAGE_REWRITE_PATHS"),
            )?,
            sources: SourceMatcher::parse(
                raw.get("REPLICATE_HOSTS"),
                raw.bool("IMAGE_ALLOW_HTTP_SOURCES")?,
            )
            .map_err(|m| ConfigError::new("REPLICATE_HOSTS", m))?,
            rewrite_max_body: raw.positive::<usize>("IMAGE_REWRITE_MAX_BODY_BYTES")?,
            max_sources_per_response: raw.positive::<usize>("IMAGE_MAX_SOURCES_PER_RESPONSE")?,
            user_id: parse_user_id(&raw)?,
            persist_mode,
            persist_timeout: raw.millis("IMAGE_PERSIST_TIMEOUT_MS")?,
            storage_backend,
            storage_path: PathBuf::from(raw.non_empty("IMAGE_STORAGE_PATH")?),
            memory_cache_bytes: raw
                .parse::<u64>("IMAGE_MEMORY_CACHE_MB")?
                .saturating_mul(1 << 20),
            max_bytes: raw.positive::<u64>("IMAGE_MAX_BYTES")?,
            max_pixels: raw.positive::<u64>("IMAGE_MAX_PIXELS")?,
            download_retries: raw.parse::<u32>("IMAGE_DOWNLOAD_RETRIES")?.min(20),
            download_concurrency: raw.positive::<usize>("IMAGE_DOWNLOAD_CONCURRENCY")?,
            download_connect_timeout: raw.millis("IMAGE_DOWNLOAD_CONNECT_TIMEOUT_MS")?,
            download_timeout: raw.millis("IMAGE_DOWNLOAD_TIMEOUT_MS")?,
            rate_per_sec: raw.positive_f64("IMAGE_DOWNLOAD_RATE_PER_SEC")?,
            burst: raw.positive_f64("IMAGE_DOWNLOAD_BURST")?,
            rate_v6_prefix: match raw.parse::<u8>("IMAGE_DOWNLOAD_RATE_IPV6_PREFIX")? {
                n @ 1..=128 => n,
                n => {
                    return Err(ConfigError::new(
                        "IMAGE_DOWNLOAD_RATE_IPV6_PREFIX",
                        format!("{n} is not a prefix length from 1 to 128"),
                    ))
                }
            },
            trust_forwarded_for: raw.bool("TRUST_FORWARDED_FOR")?,
            max_age: Duration::from_secs_f64(raw.positive_f64("IMAGE_MAX_AGE_DAYS")? * 86_400.0),
            per_user_limit: raw.parse::<usize>("IMAGE_PER_USER_LIMIT")?,
            storage_max_bytes: match raw.parse::<u64>("IMAGE_STORAGE_MAX_BYTES")? {
                0 => None,
                n => Some(n),
            },
            min_free_bytes: raw.parse::<u64>("IMAGE_MIN_FREE_BYTES")?,
            cleanup_interval: Duration::from_secs(
                raw.positive::<u64>("IMAGE_CLEANUP_INTERVAL_SECS")?,
            ),
            cache_revalidate: Duration::from_secs(raw.parse::<u64>("IMAGE_CACHE_REVALIDATE_SECS")?),
            admin_token: raw.optional("ADMIN_TOKEN"),
            s3,
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
            raw: raw.into_map(),
        };
        Ok(cfg)
    }

    /// The effective configuration, one `NAME = "value"` line each, secrets
    /// redacted. This is valid TOML, so it can seed a config file.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in settings::SETTINGS {
            let value = self.raw.get(s.name).map(String::as_str).unwrap_or("");
            let shown = if s.secret && !value.is_empty() {
                "<redacted>"
            } else {
                value
            };
            out.push_str(&format!("{} = {:?}\n", s.name, shown));
        }
        out
    }

    /// Is this request path one whose JSON response is rewritten?
    pub fn is_rewrite_path(&self, path: &str) -> bool {
        self.hosting_enabled && self.rewrite_paths.iter().any(|p| p.matches(path))
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

fn parse_public_base(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let name = "PUBLIC_BASE_URL";
    match raw.get(name) {
        "" => Ok(None),
        v => {
            let url = url::Url::parse(v)
                .map_err(|e| ConfigError::new(name, format!("{v:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(name, "must be an http(s) URL with a host"));
            }
            Ok(Some(v.trim_end_matches('/').to_string()))
        }
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
        secret: raw.optional("JWT_SECRET"),
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

fn parse_s3(raw: &Raw) -> Result<S3Config, ConfigError> {
    let endpoint = raw.optional("S3_ENDPOINT");
    if let Some(e) = &endpoint {
        url::Url::parse(e)
            .map_err(|err| ConfigError::new("S3_ENDPOINT", format!("{e:?}: {err}")))?;
    }
    let mut prefix = raw.get("S3_PREFIX").trim_start_matches('/').to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(S3Config {
        endpoint,
        bucket: raw.non_empty("S3_BUCKET")?.to_string(),
        region: raw.non_empty("S3_REGION")?.to_string(),
        force_path_style: raw.bool("S3_FORCE_PATH_STYLE")?,
        prefix,
        access_key_id: raw.optional("AWS_ACCESS_KEY_ID"),
        secret_access_key: raw.optional("AWS_SECRET_ACCESS_KEY"),
        session_token: raw.optional("AWS_SESSION_TOKEN"),
    })
}

#[cfg(test)]
mod tests;
