//! The configuration grouped by subsystem. Each group is built from the raw
//! settings here, so every subsystem gets one small struct that holds only
//! what it needs; the settings table stays the single source of truth for
//! names, defaults and help.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{self, Raw};
use super::{ConfigError, PathPattern};
use crate::sources::SourceMatcher;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
    BeforeResponse,
    Background,
    OnFirstHit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Disk,
    S3,
}

/// Which responses are rewritten, and what counts as a source.
#[derive(Debug, Clone)]
pub struct RewriteConfig {
    pub paths: Vec<PathPattern>,
    pub sources: SourceMatcher,
    pub max_body: usize,
    pub max_sources: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningMode {
    Off,
    Sign,
    Required,
}

/// Signed hosted URLs (issue 15).
#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub mode: SigningMode,
    /// Present whenever the mode is not `off`.
    pub signer: Option<crate::signing::Signer>,
    /// `None`: signatures without `exp`.
    pub ttl: Option<Duration>,
    pub resign_paths: Vec<PathPattern>,
    pub private_users: std::collections::HashSet<crate::ids::UserId>,
}

impl SigningConfig {
    pub fn is_resign_path(&self, path: &str) -> bool {
        self.mode != SigningMode::Off && self.resign_paths.iter().any(|p| p.matches(path))
    }
}

/// Webhook capture: where Replicate's webhooks arrive, and how they are
/// trusted.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub paths: Vec<PathPattern>,
    pub secret: Option<crate::webhook::WebhookSecret>,
    pub tolerance_secs: u64,
    pub reject_invalid: bool,
    pub user_param: Option<String>,
    pub rewrite: bool,
}

impl WebhookConfig {
    pub fn matches(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p.matches(path))
    }
}

/// When bytes are stored relative to the response, and how pending
/// downloads survive a crash.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub mode: PersistMode,
    pub timeout: Duration,
    /// A dead replica's pending downloads are finished by another within this.
    pub lease: Duration,
    /// on_first_hit: an image nobody asked for by then is downloaded anyway.
    /// `None` keeps it purely lazy.
    pub first_hit_deadline: Option<Duration>,
}

/// Source downloads: caps, retries, timeouts.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    pub max_bytes: u64,
    pub max_pixels: u64,
    pub retries: u32,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// The per-client token bucket on hosted images.
#[derive(Debug, Clone)]
pub struct RateConfig {
    pub per_sec: f64,
    pub burst: f64,
    pub v6_prefix: u8,
    /// `TRUSTED_PROXIES`, else `TRUST_FORWARDED_FOR`.
    pub forwarded: crate::forwarded::ForwardedFor,
}

/// Retention, the per-user limit, the disk cap, and how long failures are
/// remembered.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub max_age: Duration,
    pub per_user_limit: usize,
    pub storage_max_bytes: Option<u64>,
    /// `None`: the default floor, [`crate::lifecycle::free_floor`] of the
    /// volume's size.
    pub min_free_bytes: Option<u64>,
    pub cleanup_interval: Duration,
    pub failed_max_age: Duration,
    pub failed_keep: u32,
    /// How long a deleted image answers 410 before 404 (finding 17).
    pub tombstone_max_age: Duration,
    pub tombstone_keep: u32,
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

/// Where bytes live, and the memory cache in front of them.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub path: PathBuf,
    pub s3: Option<S3Config>,
    pub memory_cache_bytes: u64,
    pub cache_revalidate: Duration,
}

/// Where metadata lives (built in `namespace.rs`).
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    /// The setting `url` came from, for errors and `check-config`.
    pub url_from: &'static str,
    /// Postgres: the schema permaproxy's tables live in.
    pub schema: String,
}

pub(super) fn rewrite(raw: &Raw) -> Result<RewriteConfig, ConfigError> {
    Ok(RewriteConfig {
        paths: parse::path_patterns("IMAGE_REWRITE_PATHS", raw.get("IMAGE_REWRITE_PATHS"))?,
        sources: SourceMatcher::parse(
            raw.get("REPLICATE_HOSTS"),
            raw.bool("IMAGE_ALLOW_HTTP_SOURCES")?,
        )
        .map_err(|m| ConfigError::new("REPLICATE_HOSTS", m))?,
        max_body: raw.positive::<usize>("IMAGE_REWRITE_MAX_BODY_BYTES")?,
        max_sources: raw.positive::<usize>("IMAGE_MAX_SOURCES_PER_RESPONSE")?,
    })
}

pub(super) fn persist(raw: &Raw) -> Result<PersistConfig, ConfigError> {
    let mode = match raw.get("IMAGE_PERSIST_MODE") {
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
    let lease = raw.parse::<u64>("IMAGE_PENDING_LEASE_SECS")?;
    if lease < 3 {
        return Err(ConfigError::new(
            "IMAGE_PENDING_LEASE_SECS",
            "must be at least 3 (leases are renewed every sixth of it)",
        ));
    }
    Ok(PersistConfig {
        mode,
        timeout: raw.millis("IMAGE_PERSIST_TIMEOUT_MS")?,
        lease: Duration::from_secs(lease),
        first_hit_deadline: match raw.parse::<u64>("IMAGE_FIRST_HIT_DEADLINE_SECS")? {
            0 => None,
            n => Some(Duration::from_secs(n)),
        },
    })
}

pub(super) fn download(raw: &Raw) -> Result<DownloadConfig, ConfigError> {
    Ok(DownloadConfig {
        max_bytes: raw.positive::<u64>("IMAGE_MAX_BYTES")?,
        max_pixels: raw.positive::<u64>("IMAGE_MAX_PIXELS")?,
        retries: raw.parse::<u32>("IMAGE_DOWNLOAD_RETRIES")?.min(20),
        concurrency: raw.positive::<usize>("IMAGE_DOWNLOAD_CONCURRENCY")?,
        connect_timeout: raw.millis("IMAGE_DOWNLOAD_CONNECT_TIMEOUT_MS")?,
        timeout: raw.millis("IMAGE_DOWNLOAD_TIMEOUT_MS")?,
    })
}

pub(super) fn serve_rate(raw: &Raw) -> Result<RateConfig, ConfigError> {
    let v6_prefix = match raw.parse::<u8>("IMAGE_DOWNLOAD_RATE_IPV6_PREFIX")? {
        n @ 1..=128 => n,
        n => {
            return Err(ConfigError::new(
                "IMAGE_DOWNLOAD_RATE_IPV6_PREFIX",
                format!("{n} is not a prefix length from 1 to 128"),
            ))
        }
    };
    Ok(RateConfig {
        per_sec: raw.positive_f64("IMAGE_DOWNLOAD_RATE_PER_SEC")?,
        burst: raw.positive_f64("IMAGE_DOWNLOAD_BURST")?,
        v6_prefix,
        forwarded: forwarded_policy(raw)?,
    })
}

fn forwarded_policy(raw: &Raw) -> Result<crate::forwarded::ForwardedFor, ConfigError> {
    use crate::forwarded::{parse_trusted, ForwardedFor};
    let nets = parse_trusted(raw.get("TRUSTED_PROXIES"))
        .map_err(|m| ConfigError::new("TRUSTED_PROXIES", m))?;
    Ok(match (nets.is_empty(), raw.bool("TRUST_FORWARDED_FOR")?) {
        (false, _) => ForwardedFor::TrustedProxies(nets),
        (true, true) => ForwardedFor::Leftmost,
        (true, false) => ForwardedFor::Ignore,
    })
}

pub(super) fn lifecycle(raw: &Raw) -> Result<LifecycleConfig, ConfigError> {
    Ok(LifecycleConfig {
        max_age: Duration::from_secs_f64(raw.positive_f64("IMAGE_MAX_AGE_DAYS")? * 86_400.0),
        per_user_limit: raw.parse::<usize>("IMAGE_PER_USER_LIMIT")?,
        storage_max_bytes: match raw.parse::<u64>("IMAGE_STORAGE_MAX_BYTES")? {
            0 => None,
            n => Some(n),
        },
        min_free_bytes: match raw.get("IMAGE_MIN_FREE_BYTES") {
            "auto" => None,
            _ => Some(raw.parse::<u64>("IMAGE_MIN_FREE_BYTES")?),
        },
        cleanup_interval: Duration::from_secs(raw.positive::<u64>("IMAGE_CLEANUP_INTERVAL_SECS")?),
        failed_max_age: Duration::from_secs_f64(
            raw.positive_f64("IMAGE_FAILED_RETENTION_DAYS")? * 86_400.0,
        ),
        failed_keep: raw.positive::<u32>("IMAGE_FAILED_MAX")?,
        tombstone_max_age: days(raw, "IMAGE_TOMBSTONE_DAYS")?,
        tombstone_keep: raw.positive::<u32>("IMAGE_TOMBSTONE_MAX")?,
    })
}

/// A positive number of days (decimals allowed), at most a century: a
/// larger one would overflow the clock arithmetic.
fn days(raw: &Raw, name: &str) -> Result<Duration, ConfigError> {
    let d = raw.positive_f64(name)?;
    if d > 36_500.0 {
        return Err(ConfigError::new(name, "must be at most 36500 (a century)"));
    }
    Ok(Duration::from_secs_f64(d * 86_400.0))
}

pub(super) fn storage(raw: &Raw) -> Result<StorageConfig, ConfigError> {
    let backend = match raw.get("IMAGE_STORAGE_BACKEND") {
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
    let s3 = match (backend, raw.get("S3_BUCKET")) {
        (StorageBackend::S3, _) => Some(s3(raw)?),
        (StorageBackend::Disk, "") => None,
        (StorageBackend::Disk, _) => Some(s3(raw)?),
    };
    Ok(StorageConfig {
        backend,
        path: PathBuf::from(raw.non_empty("IMAGE_STORAGE_PATH")?),
        s3,
        memory_cache_bytes: raw
            .parse::<u64>("IMAGE_MEMORY_CACHE_MB")?
            .saturating_mul(1 << 20),
        cache_revalidate: Duration::from_secs(raw.parse::<u64>("IMAGE_CACHE_REVALIDATE_SECS")?),
    })
}

fn s3(raw: &Raw) -> Result<S3Config, ConfigError> {
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

pub(super) fn webhook(raw: &Raw) -> Result<WebhookConfig, ConfigError> {
    let secret = match raw.optional("REPLICATE_WEBHOOK_SECRET") {
        None => None,
        Some(s) => Some(
            crate::webhook::WebhookSecret::parse(&s)
                .map_err(|m| ConfigError::new("REPLICATE_WEBHOOK_SECRET", m))?,
        ),
    };
    let paths = parse::path_patterns("IMAGE_WEBHOOK_PATHS", raw.get("IMAGE_WEBHOOK_PATHS"))?;
    // Unsigned, anyone could POST a "webhook" naming any user, with data:
    // images that no host list limits: stored under the victim, evicting
    // theirs. Capture is signed or off.
    if !paths.is_empty() && secret.is_none() {
        return Err(ConfigError::new(
            "REPLICATE_WEBHOOK_SECRET",
            "IMAGE_WEBHOOK_PATHS is set, so REPLICATE_WEBHOOK_SECRET is required (the whsec_… key of Replicate's GET /v1/webhooks/default/secret): unsigned webhooks could file images under any user",
        ));
    }
    Ok(WebhookConfig {
        paths,
        secret,
        tolerance_secs: raw.positive::<u64>("REPLICATE_WEBHOOK_TOLERANCE_SECS")?,
        reject_invalid: raw.bool("REPLICATE_WEBHOOK_REJECT_INVALID")?,
        user_param: raw.optional("IMAGE_WEBHOOK_USER_PARAM"),
        rewrite: raw.bool("IMAGE_WEBHOOK_REWRITE")?,
    })
}

pub(super) fn signing(raw: &Raw) -> Result<SigningConfig, ConfigError> {
    let mode = match raw.get("IMAGE_URL_SIGNING") {
        "off" => SigningMode::Off,
        "sign" => SigningMode::Sign,
        "required" => SigningMode::Required,
        other => {
            return Err(ConfigError::new(
                "IMAGE_URL_SIGNING",
                format!("{other:?} is not one of off, sign, required"),
            ))
        }
    };
    let signer = match raw.optional("IMAGE_SIGNING_KEYS") {
        Some(keys) => Some(
            crate::signing::Signer::parse(&keys)
                .map_err(|m| ConfigError::new("IMAGE_SIGNING_KEYS", m))?,
        ),
        None if mode != SigningMode::Off => {
            return Err(ConfigError::new(
                "IMAGE_SIGNING_KEYS",
                "IMAGE_URL_SIGNING=sign or required needs at least one key",
            ))
        }
        None => None,
    };
    let private_users: std::collections::HashSet<crate::ids::UserId> = raw
        .get("IMAGE_PRIVATE_USERS")
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(crate::ids::UserId::sanitize)
        .collect();
    if !private_users.is_empty() && mode == SigningMode::Off {
        return Err(ConfigError::new(
            "IMAGE_PRIVATE_USERS",
            "private images need IMAGE_URL_SIGNING=sign or required",
        ));
    }
    Ok(SigningConfig {
        mode,
        signer: signer.filter(|_| mode != SigningMode::Off),
        ttl: match raw.parse::<u64>("IMAGE_URL_TTL_SECS")? {
            0 => None,
            n if n > crate::signing::MAX_TTL_SECS => {
                return Err(ConfigError::new(
                    "IMAGE_URL_TTL_SECS",
                    format!(
                        "{n} is more than ten years ({} seconds); use 0 for URLs that never expire",
                        crate::signing::MAX_TTL_SECS
                    ),
                ))
            }
            n => Some(Duration::from_secs(n)),
        },
        resign_paths: parse::path_patterns("IMAGE_RESIGN_PATHS", raw.get("IMAGE_RESIGN_PATHS"))?,
        private_users,
    })
}

/// Variants and ingest transcoding (issue 14): which variants may be asked
/// for, how much CPU and memory making them may take, and what happens to
/// images as they are stored.
#[derive(Debug, Clone)]
pub struct VariantsConfig {
    /// Allowed `?w=` values, ascending. Empty: no resizing, only `format`.
    pub widths: Vec<u32>,
    /// Transcodes running at once (blocking threads, one core each).
    pub concurrency: usize,
    /// Variant makes that may wait for a slot before new ones get 503.
    pub queue: usize,
    /// Estimated peak heap of one transcode, checked before decoding.
    pub memory_bytes: u64,
    /// Variants stored per image at most.
    pub per_image: u64,
    pub strip_metadata: bool,
    pub store_format: crate::variants::StoreFormat,
    pub store_quality: u8,
    /// IMAGE_IGNORED_PARAMS: taken out of a hosted URL's query first.
    pub ignored_params: crate::ignored_params::IgnoredParams,
}

/// The widest variant anything here can encode (WebP's limit); a larger
/// width could never be made, so it is refused at start, not per request.
const MAX_VARIANT_WIDTH: u32 = 16_383;

pub(super) fn variants(raw: &Raw) -> Result<VariantsConfig, ConfigError> {
    let name = "IMAGE_VARIANT_WIDTHS";
    let mut widths = Vec::new();
    for part in raw
        .get(name)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.parse::<u32>() {
            Ok(w) if (1..=MAX_VARIANT_WIDTH).contains(&w) => widths.push(w),
            _ => {
                return Err(ConfigError::new(
                    name,
                    format!("{part:?} is not a width from 1 to {MAX_VARIANT_WIDTH}"),
                ))
            }
        }
    }
    widths.sort_unstable();
    widths.dedup();
    let concurrency = match raw.parse::<usize>("IMAGE_TRANSCODE_CONCURRENCY")? {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let store_format = raw
        .get("IMAGE_STORE_FORMAT")
        .parse::<crate::variants::StoreFormat>()
        .map_err(|m| ConfigError::new("IMAGE_STORE_FORMAT", m))?;
    let store_quality = match raw.parse::<u8>("IMAGE_STORE_QUALITY") {
        Ok(q @ 1..=100) => q,
        _ => {
            return Err(ConfigError::new(
                "IMAGE_STORE_QUALITY",
                format!(
                    "{:?} is not a quality from 1 to 100",
                    raw.get("IMAGE_STORE_QUALITY")
                ),
            ))
        }
    };
    Ok(VariantsConfig {
        widths,
        concurrency,
        queue: raw.parse::<usize>("IMAGE_TRANSCODE_QUEUE")?,
        memory_bytes: raw
            .positive::<u64>("IMAGE_TRANSCODE_MEMORY_MB")?
            .saturating_mul(1 << 20),
        per_image: raw.positive::<u64>("IMAGE_VARIANTS_PER_IMAGE")?,
        strip_metadata: raw.bool("IMAGE_STRIP_METADATA")?,
        store_format,
        store_quality,
        ignored_params: crate::ignored_params::IgnoredParams::parse(
            raw.get("IMAGE_IGNORED_PARAMS"),
        )
        .map_err(|m| ConfigError::new("IMAGE_IGNORED_PARAMS", m))?,
    })
}
