//! The table of every setting: its name (the environment variable, and the
//! TOML key), its default and a one-line help. `--help`, `check-config` and
//! `docs/settings.md` are all generated from or checked against this table, so
//! it is the single source of truth.

pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    /// Redacted by `check-config` and in logs.
    pub secret: bool,
}

const fn s(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default,
        help,
        secret: false,
    }
}

const fn secret(name: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default: "",
        help,
        secret: true,
    }
}

pub const SETTINGS: &[Setting] = &[
    s("UPSTREAM_URL", "http://127.0.0.1:3000", "Studio API base URL; every request not handled here is forwarded to it"),
    s("LISTEN_ADDR", "", "public listener; default 0.0.0.0:$PORT when PORT is set, else 0.0.0.0:8080"),
    s("PORT", "", "port for the default LISTEN_ADDR (Railway sets it)"),
    s("METRICS_ADDR", "127.0.0.1:9090", "private admin listener: /healthz /readyz /metrics /admin/*"),
    s("PUBLIC_BASE_URL", "", "base of hosted URLs, e.g. https://api.example.com; default from Host and X-Forwarded-Proto"),
    s("WORKER_THREADS", "0", "proxy worker threads; 0 means one per core"),
    s("UPSTREAM_TIMEOUT_MS", "120000", "how long a rewrite-route upstream call may take"),
    s("IMAGE_HOSTING_ENABLED", "true", "false makes permaproxy a pure pass-through that fetches nothing"),
    s("IMAGE_REWRITE_PATHS", "/v1/images/generate", "comma list of request paths whose JSON responses are rewritten; a trailing * is a prefix match"),
    s("REPLICATE_HOSTS", "replicate.delivery,*.replicate.delivery,delivery.replicate.com", "comma list of source hosts (host[:port], *. wildcard); exact entries may resolve to private addresses"),
    s("IMAGE_ALLOW_HTTP_SOURCES", "false", "also accept plain http:// source URLs"),
    s("IMAGE_REWRITE_MAX_BODY_BYTES", "8388608", "larger upstream bodies pass through untouched"),
    s("IMAGE_MAX_SOURCES_PER_RESPONSE", "64", "distinct sources hosted per response; the rest keep their original URLs (counted as over_cap)"),
    s("IMAGE_WEBHOOK_PATHS", "", "comma list of request paths where Replicate's webhooks reach Studio API (a trailing * is a prefix match); their images are captured on the way; empty turns capture off"),
    secret("REPLICATE_WEBHOOK_SECRET", "the whsec_… secret of Replicate's GET /v1/webhooks/default/secret; webhooks are then verified before their images are captured"),
    s("REPLICATE_WEBHOOK_TOLERANCE_SECS", "300", "a webhook-timestamp further than this from now fails verification"),
    s("REPLICATE_WEBHOOK_REJECT_INVALID", "false", "answer 401 to a webhook that fails verification instead of forwarding it uncaptured"),
    s("IMAGE_WEBHOOK_USER_PARAM", "", "query parameter of the webhook URL holding the user id, when the prediction was not seen starting"),
    s("IMAGE_WEBHOOK_REWRITE", "false", "rewrite captured webhook bodies to hosted URLs before they reach Studio API (re-signed when verified)"),
    secret("IMAGE_SIGNING_KEYS", "comma list of URL-signing secrets, each at least 32 characters; the first signs, every one verifies (rotation)"),
    s("IMAGE_URL_SIGNING", "off", "off | sign (hosted URLs are handed out signed; unsigned ones still work) | required (a hosted request without a valid signature is refused)"),
    s("IMAGE_URL_TTL_SECS", "0", "signed URLs expire this long after they are handed out, at most ten years (315360000); 0 signs without exp (a permanent capability URL)"),
    s("IMAGE_RESIGN_PATHS", "", "comma list of request paths whose JSON responses get this proxy's hosted URLs signed afresh, for the requesting user only (a trailing * is a prefix match)"),
    s("IMAGE_PRIVATE_USERS", "", "comma list of user ids whose images require a signature even when IMAGE_URL_SIGNING=sign"),
    s("IMAGE_USER_ID_HEADER", "x-user-id", "request header read by the default IMAGE_USER_ID_FROM"),
    s("IMAGE_USER_ID_FROM", "", "ordered user id sources: response-header:NAME, jwt:CLAIM, request-header:NAME, body:FIELD, anonymous"),
    s("IMAGE_USER_ID_TRUSTED_ONLY", "false", "refuse to start when IMAGE_USER_ID_FROM holds a source the client controls"),
    s("IMAGE_USER_ID_REQUIRED", "false", "when no source yields a user id, leave the original URLs instead of hosting as anonymous"),
    secret("PERMAPROXY_JWT_SECRET", "HS256 secret for jwt:CLAIM user ids; wins over JWT_SECRET"),
    secret("JWT_SECRET", "used when PERMAPROXY_JWT_SECRET is empty (Studio API's own framework reads this name too)"),
    s("JWT_PUBLIC_KEY", "", "PEM (or path to a PEM file) for RS256/ES256 jwt:CLAIM user ids"),
    s("JWT_JWKS_PATH", "", "JWKS file for RS256/ES256 jwt:CLAIM user ids"),
    s("JWT_AUDIENCE", "", "when set, jwt: user ids need a token whose aud holds this value"),
    s("JWT_ISSUER", "", "when set, jwt: user ids need a token whose iss is this value"),
    s("JWT_REQUIRE_EXP", "true", "refuse tokens without exp (they would never expire)"),
    s("IMAGE_PERSIST_MODE", "before_response", "before_response | background | on_first_hit"),
    s("IMAGE_PERSIST_TIMEOUT_MS", "10000", "before_response waits at most this long, then answers and finishes in the background"),
    s("IMAGE_PENDING_LEASE_SECS", "30", "a pending download whose replica died is taken over and finished by another replica within this many seconds"),
    s("IMAGE_FIRST_HIT_DEADLINE_SECS", "1800", "on_first_hit: an image not requested by then is downloaded anyway, inside Replicate's hour; 0 keeps it purely lazy (and loses images nobody asks for in time)"),
    s("IMAGE_STORAGE_BACKEND", "disk", "disk | s3"),
    s("IMAGE_STORAGE_PATH", "./data/images", "image folder (with s3: only the staging folder, and the default SQLite database)"),
    s("PERMAPROXY_DATABASE_URL", "", "image metadata: postgres://user:pass@host/db for several replicas; default sqlite://{IMAGE_STORAGE_PATH}/permaproxy.db; wins over DATABASE_URL"),
    s("DATABASE_URL", "", "used when PERMAPROXY_DATABASE_URL is empty (Studio API's own framework reads this name too)"),
    s("PERMAPROXY_DB_SCHEMA", "permaproxy", "Postgres schema holding permaproxy's tables (created when missing), so a database shared with Studio API keeps both apart"),
    s("DATABASE_MAX_CONNECTIONS", "10", "Postgres connection pool size per replica"),
    s("IMAGE_MEMORY_CACHE_MB", "256", "memory cache for hot images, in MiB; 0 turns it off"),
    s("IMAGE_MAX_BYTES", "52428800", "largest image accepted from a source, enforced while streaming"),
    s("IMAGE_MAX_PIXELS", "100000000", "largest width x height accepted, read from the image header"),
    s("IMAGE_DOWNLOAD_RETRIES", "5", "retries after the first attempt, with exponential backoff and jitter"),
    s("IMAGE_DOWNLOAD_CONCURRENCY", "32", "source downloads running at once; excess work queues"),
    s("IMAGE_DOWNLOAD_CONNECT_TIMEOUT_MS", "5000", "connect timeout per download attempt"),
    s("IMAGE_DOWNLOAD_TIMEOUT_MS", "60000", "total timeout per download attempt"),
    s("IMAGE_DOWNLOAD_RATE_PER_SEC", "50", "hosted-image requests per second per client (token bucket refill)"),
    s("IMAGE_DOWNLOAD_BURST", "100", "token bucket size per client"),
    s("IMAGE_DOWNLOAD_RATE_IPV6_PREFIX", "64", "IPv6 clients share one token bucket per network of this prefix length (1-128), so rotating addresses in a /64 does not escape the limit"),
    s("TRUST_FORWARDED_FOR", "false", "identify clients by the leftmost X-Forwarded-For address, which the client itself writes (prefer TRUSTED_PROXIES)"),
    s("TRUSTED_PROXIES", "", "comma list of CIDRs (or `private`) of the proxies in front; the client is then the rightmost X-Forwarded-For address that is not one of them, as nginx's real_ip_recursive does; behind Railway's edge: private"),
    s("IMAGE_MAX_AGE_DAYS", "90", "delete images not requested for this many days (decimals allowed)"),
    s("IMAGE_PER_USER_LIMIT", "50", "images kept per user, least recently requested evicted first; 0 means no limit"),
    s("IMAGE_STORAGE_MAX_BYTES", "0", "cap on stored image bytes; 0 means no cap"),
    s("IMAGE_MIN_FREE_BYTES", "auto", "evict least recently requested images, as each image is stored and at cleanup, while free disk is below this; auto: 5% of the volume, at most 1 GiB; 0 turns it off"),
    s("IMAGE_CLEANUP_INTERVAL_SECS", "86400", "how often the cleanup job runs (it also runs at start)"),
    s("IMAGE_FAILED_RETENTION_DAYS", "30", "failed downloads are listed (and answer 502) for this long, then forgotten"),
    s("IMAGE_FAILED_MAX", "10000", "at most this many failed downloads are remembered, newest first"),
    s("IMAGE_TOMBSTONE_DAYS", "365", "a deleted image answers 410 image_gone with its reason (expired, user_limit, storage_cap, deleted) for this many days, then 404"),
    s("IMAGE_TOMBSTONE_MAX", "1000000", "at most this many deleted images are remembered for 410 answers, newest first"),
    s("IMAGE_CACHE_REVALIDATE_SECS", "60", "how often each replica checks the database for images deleted elsewhere and drops them from memory"),
    s("IMAGE_VARIANT_WIDTHS", "64,128,256,512,1024,2048", "comma list of the widths a variant may ask for (?w=); any other width gets 400; empty turns resizing off"),
    s("IMAGE_TRANSCODE_CONCURRENCY", "0", "variants and ingest transcodes made at once, each on one blocking thread off the async workers; 0 means one per core"),
    s("IMAGE_TRANSCODE_QUEUE", "32", "variant makes that may wait for a transcode slot; beyond that, requests get 503 with Retry-After"),
    s("IMAGE_VARIANTS_PER_IMAGE", "32", "most variants stored per image; a new one evicts the least recently requested (heights, fits, formats and qualities multiply, so widths alone do not bound them)"),
    s("IMAGE_IGNORED_PARAMS", "utm_*,v,_,fbclid,gclid", "comma list of query parameters a hosted URL ignores (a trailing * is a prefix match): analytics tags and cache-busters never change the answer nor the signed text; any other unknown parameter still gets 400"),
    s("IMAGE_TRANSCODE_MEMORY_MB", "256", "estimated peak memory of one transcode (decode, resize, encode), checked from the header before decoding; a variant that needs more gets 422"),
    s("IMAGE_STRIP_METADATA", "true", "strip EXIF, XMP and text metadata from images as they are stored, keeping ICC colour profiles (variants are always stripped)"),
    s("IMAGE_STORE_FORMAT", "original", "original | webp | avif: transcode images as they are stored (kept as they are when not smaller, animated or AVIF); hosted URLs carry the stored format's extension"),
    s("IMAGE_STORE_QUALITY", "90", "lossy quality (1-100) of IMAGE_STORE_FORMAT=webp|avif"),
    secret("ADMIN_TOKEN", "bearer token for /admin/*, at least 32 characters; unset means the admin API answers 403"),
    s("S3_ENDPOINT", "", "S3 endpoint URL; empty means AWS"),
    s("S3_BUCKET", "", "bucket for IMAGE_STORAGE_BACKEND=s3"),
    s("S3_REGION", "us-east-1", "S3 region (garage for Garage, auto for R2)"),
    s("S3_FORCE_PATH_STYLE", "false", "path-style addressing (Garage, MinIO)"),
    s("S3_PREFIX", "images/", "key prefix inside the bucket"),
    s("AWS_ACCESS_KEY_ID", "", "S3 access key id"),
    secret("AWS_SECRET_ACCESS_KEY", "S3 secret key"),
    secret("AWS_SESSION_TOKEN", "S3 session token (optional)"),
    s("CDN_PURGE_PROVIDER", "", "cloudflare | fastly | bunny | webhook: tag hosted answers and purge an image at the CDN when it is deleted or made private; empty turns it off"),
    s("IMAGE_CACHE_TAG_HEADER", "", "response header carrying the cache tags, instead of the provider's (Cache-Tag, Surrogate-Key, CDN-Tag); e.g. the header CloudFront is configured with"),
    s("CDN_PURGE_API_URL", "", "base URL of the provider's API instead of its own (tests, an egress proxy)"),
    s("CDN_PURGE_MAX_PER_MINUTE", "0", "purge requests a minute at most; 0 means the provider's documented rate (Cloudflare's free plan: 5)"),
    s("CLOUDFLARE_ZONE_ID", "", "the zone whose cache is purged (cloudflare)"),
    secret("CLOUDFLARE_API_TOKEN", "API token with the Zone > Cache Purge permission (cloudflare)"),
    s("FASTLY_SERVICE_ID", "", "the service whose cache is purged (fastly)"),
    secret("FASTLY_API_TOKEN", "API token with purge_select scope (fastly)"),
    s("FASTLY_SOFT_PURGE", "false", "mark purged objects stale instead of removing them (fastly)"),
    s("BUNNY_PULLZONE_ID", "", "the pull zone whose cache is purged (bunny)"),
    secret("BUNNY_API_KEY", "account API key (bunny)"),
    s("CDN_PURGE_WEBHOOK_URL", "", "where purge requests are POSTed (webhook)"),
    secret("CDN_PURGE_WEBHOOK_SECRET", "whsec_… key that signs purge webhooks, Standard Webhooks style (webhook)"),
    s("LOG_FORMAT", "", "json | pretty; default pretty on a terminal, json otherwise"),
    s("SHUTDOWN_DRAIN_SECS", "0", "on SIGTERM, how long health answers 503 while the listeners still accept, before they close (5 behind Kubernetes or a load balancer)"),
    s("SHUTDOWN_GRACE_SECS", "10", "on SIGTERM, after the drain, how long requests in flight may take to finish"),
];

pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The settings as `--help` lists them.
pub fn help_text() -> String {
    let mut out =
        String::from("Settings (environment variables; the same names work as TOML keys):\n");
    for s in SETTINGS {
        let default = if s.default.is_empty() { "-" } else { s.default };
        out.push_str(&format!(
            "  {:<34} [default: {}]\n      {}\n",
            s.name, default, s.help
        ));
    }
    out
}
