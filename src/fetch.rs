//! Downloads from image sources: retries with backoff and jitter, size and
//! pixel caps enforced while streaming, format sniffing, and an SSRF guard
//! that checks the address actually resolved (so DNS rebinding cannot get
//! around it). Bytes go to a staging file that is fsynced before it is
//! handed to the store.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::image_format::{self, Format};
use crate::metrics;
use crate::sources::{address_is_public, SourceMatcher};

/// Bytes kept in memory to find the image dimensions; a JPEG's size marker
/// can sit after a large EXIF block.
const HEAD_LIMIT: usize = 1 << 20;
const MAX_REDIRECTS: usize = 3;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// The source says the file is gone (404, 410): final.
    #[error("source answered {0}")]
    Gone(u16),
    /// Hostile or broken content, or a forbidden destination: final.
    #[error("refused: {0}")]
    Rejected(String),
    /// Still failing after every retry.
    #[error("download failed: {0}")]
    Failed(String),
    #[error("storage error: {message}")]
    Storage { message: String, full: bool },
}

/// A downloaded image in a staging file. Dropping it removes the file.
pub struct Downloaded {
    pub staged: tempfile::TempPath,
    pub size: u64,
    pub sha256: String,
    pub format: Format,
    /// Width and height, read from the image header.
    pub dims: Option<(u32, u32)>,
}

enum AttemptError {
    Retry(String),
    Final(FetchError),
}

pub struct Fetcher {
    /// Public addresses only.
    public: reqwest::Client,
    /// Also private addresses, for hosts listed exactly with their port.
    private: reqwest::Client,
    matcher: SourceMatcher,
    max_bytes: u64,
    max_pixels: u64,
    retries: u32,
    staging: PathBuf,
    permits: Arc<Semaphore>,
}

#[derive(Debug)]
struct ForbiddenAddress(String);

impl std::fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to forbidden addresses", self.0)
    }
}

impl std::error::Error for ForbiddenAddress {}

/// Resolves, then drops every address a download may not reach. The
/// connection is made to what this returns, so the check cannot be raced.
/// The resolver never sees the port, so it is told up front whether private
/// addresses are allowed: the fetcher picks the client per hop, from the
/// host and port of that hop's URL.
struct GuardedResolver {
    matcher: SourceMatcher,
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private && self.matcher.host_listed(&host);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || address_is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(ForbiddenAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn build_client(cfg: &Config, allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            matcher: cfg.rewrite.sources.clone(),
            allow_private,
        }))
        // Redirects are followed by hand, so every hop is checked and sent
        // through the client its own host and port call for.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.download.connect_timeout)
        .timeout(cfg.download.timeout)
        .pool_max_idle_per_host(cfg.download.concurrency)
        .user_agent(concat!("permaproxy/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
}

impl Fetcher {
    pub fn new(cfg: &Config, staging: &Path) -> Result<Fetcher, reqwest::Error> {
        Ok(Fetcher {
            public: build_client(cfg, false)?,
            private: build_client(cfg, true)?,
            matcher: cfg.rewrite.sources.clone(),
            max_bytes: cfg.download.max_bytes,
            max_pixels: cfg.download.max_pixels,
            retries: cfg.download.retries,
            staging: staging.to_path_buf(),
            permits: Arc::new(Semaphore::new(cfg.download.concurrency)),
        })
    }

    /// Downloads `url` with retries. Records one download outcome metric.
    pub async fn fetch(&self, url: &url::Url) -> Result<Downloaded, FetchError> {
        let started = Instant::now();
        let result = self.fetch_with_retries(url).await;
        record_outcome(&result, started);
        result
    }

    async fn fetch_with_retries(&self, url: &url::Url) -> Result<Downloaded, FetchError> {
        if let Some(why) = forbidden_reason(&self.matcher, url) {
            return Err(FetchError::Rejected(why));
        }
        let mut attempt = 0u32;
        loop {
            let outcome = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| FetchError::Failed("download queue closed".into()))?;
                self.attempt(url).await
            };
            match outcome {
                Ok(d) => return Ok(d),
                Err(AttemptError::Final(e)) => return Err(e),
                Err(AttemptError::Retry(reason)) if attempt >= self.retries => {
                    return Err(FetchError::Failed(format!(
                        "{reason} (after {} attempts)",
                        attempt + 1
                    )))
                }
                Err(AttemptError::Retry(reason)) => {
                    metrics::get().downloads.with_label_values(&["retry"]).inc();
                    tracing::warn!(source = %url, attempt = attempt + 1, %reason, "download attempt failed, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// GETs `url`, following at most [`MAX_REDIRECTS`] redirects, each hop
    /// checked against the source policy before it is requested.
    async fn get_following(&self, url: &url::Url) -> Result<reqwest::Response, AttemptError> {
        let mut url = url.clone();
        for hop in 0..=MAX_REDIRECTS {
            let client = if self.matcher.private_allowed(&url) {
                &self.private
            } else {
                &self.public
            };
            let resp = client.get(url.clone()).send().await.map_err(classify)?;
            if !matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let next = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|loc| url.join(loc).ok())
                .ok_or_else(|| rejected("redirect without a usable Location".into()))?;
            if let Some(why) = forbidden_reason(&self.matcher, &next) {
                return Err(rejected(format!("redirect to {next}: {why}")));
            }
            url = next;
        }
        Err(rejected(format!("more than {MAX_REDIRECTS} redirects")))
    }

    async fn attempt(&self, url: &url::Url) -> Result<Downloaded, AttemptError> {
        let mut resp = self.get_following(url).await?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            404 | 410 => return Err(AttemptError::Final(FetchError::Gone(status))),
            408 | 425 | 429 | 500..=599 => {
                return Err(AttemptError::Retry(format!("source answered {status}")))
            }
            _ => {
                return Err(AttemptError::Final(FetchError::Failed(format!(
                    "source answered {status}"
                ))))
            }
        }
        let declared = resp.content_length();
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(AttemptError::Final(too_big(self.max_bytes)));
        }
        let mut sink = Sink::create(&self.staging, self.max_bytes, self.max_pixels).await?;
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            sink.push(&chunk).await?;
        }
        if let Some(n) = declared {
            if sink.size < n {
                return Err(AttemptError::Retry(format!(
                    "truncated body: {} of {n} bytes",
                    sink.size
                )));
            }
        }
        sink.finish().await
    }

    /// Stores the bytes of a `data:` URI like a download.
    pub async fn from_data_uri(&self, uri: &str) -> Result<Downloaded, FetchError> {
        let started = Instant::now();
        let result = self.decode_data_uri(uri).await;
        record_outcome(&result, started);
        result
    }

    async fn decode_data_uri(&self, uri: &str) -> Result<Downloaded, FetchError> {
        let payload = uri
            .split_once(',')
            .map(|(_, p)| p)
            .ok_or_else(|| FetchError::Rejected("malformed data URI".into()))?;
        if (payload.len() as u64).saturating_mul(3) / 4 > self.max_bytes + 3 {
            return Err(too_big(self.max_bytes));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|_| FetchError::Rejected("data URI is not valid base64".into()))?;
        let mut sink = Sink::create(&self.staging, self.max_bytes, self.max_pixels)
            .await
            .map_err(attempt_to_fetch)?;
        sink.push(&bytes).await.map_err(attempt_to_fetch)?;
        sink.finish().await.map_err(attempt_to_fetch)
    }
}

fn attempt_to_fetch(e: AttemptError) -> FetchError {
    match e {
        AttemptError::Final(f) => f,
        AttemptError::Retry(m) => FetchError::Failed(m),
    }
}

fn record_outcome(result: &Result<Downloaded, FetchError>, started: Instant) {
    let m = metrics::get();
    let outcome = match result {
        Ok(d) => {
            m.downloaded_bytes.inc_by(d.size);
            m.download_duration.observe(started.elapsed().as_secs_f64());
            "ok"
        }
        Err(FetchError::Rejected(_)) => "rejected",
        Err(_) => "failed",
    };
    m.downloads.with_label_values(&[outcome]).inc();
}

fn rejected(why: String) -> AttemptError {
    AttemptError::Final(FetchError::Rejected(why))
}

fn too_big(max: u64) -> FetchError {
    FetchError::Rejected(format!(
        "image is larger than IMAGE_MAX_BYTES ({max} bytes)"
    ))
}

fn host_of(url: &url::Url) -> String {
    url.host_str().unwrap_or("?").to_string()
}

#[cfg(test)]
fn url_permitted(matcher: &SourceMatcher, url: &url::Url) -> bool {
    forbidden_reason(matcher, url).is_none()
}

/// Host policy plus the address policy for IP literals, which never reach
/// the resolver: why a download may not go to `url` (for the log line), or
/// None when it may.
fn forbidden_reason(matcher: &SourceMatcher, url: &url::Url) -> Option<String> {
    if !matcher.url_allowed(url) {
        return Some(format!(
            "{} is not a source allowed by REPLICATE_HOSTS",
            host_of(url)
        ));
    }
    let host = url.host_str().unwrap_or_default();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if !address_is_public(ip) && !matcher.private_allowed(url) => Some(format!(
            "{host} is a private or loopback address not listed exactly (host and port) in REPLICATE_HOSTS"
        )),
        _ => None,
    }
}

fn classify(e: reqwest::Error) -> AttemptError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<ForbiddenAddress>() {
            return AttemptError::Final(FetchError::Rejected(f.to_string()));
        }
        source = s.source();
    }
    AttemptError::Retry(error_chain(&e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Exponential backoff with full jitter in [base/2, base].
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    base.mul_f64(jitter)
}

/// Streams bytes into a staging file while checking format, size and pixels.
struct Sink {
    file: tokio::fs::File,
    path: tempfile::TempPath,
    hasher: Sha256,
    head: Vec<u8>,
    size: u64,
    format: Option<Format>,
    dims: Option<(u32, u32)>,
    max_bytes: u64,
    max_pixels: u64,
}

fn storage_error(e: std::io::Error) -> AttemptError {
    let full = crate::store::is_disk_full(&e);
    metrics::get()
        .storage_errors
        .with_label_values(&[if full { "full" } else { "io" }])
        .inc();
    AttemptError::Final(FetchError::Storage {
        message: e.to_string(),
        full,
    })
}

impl Sink {
    async fn create(dir: &Path, max_bytes: u64, max_pixels: u64) -> Result<Sink, AttemptError> {
        let tmp = tempfile::Builder::new()
            .prefix("dl-")
            .tempfile_in(dir)
            .map_err(storage_error)?;
        let (file, path) = tmp.into_parts();
        Ok(Sink {
            file: tokio::fs::File::from_std(file),
            path,
            hasher: Sha256::new(),
            head: Vec::new(),
            size: 0,
            format: None,
            dims: None,
            max_bytes,
            max_pixels,
        })
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), AttemptError> {
        self.size += chunk.len() as u64;
        if self.size > self.max_bytes {
            return Err(AttemptError::Final(too_big(self.max_bytes)));
        }
        if self.head.len() < HEAD_LIMIT && self.dims.is_none() {
            let take = chunk.len().min(HEAD_LIMIT - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
            self.check_head(false)?;
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(storage_error)
    }

    /// Refuses non-images and decompression bombs as early as the header
    /// allows, before the rest is downloaded.
    fn check_head(&mut self, at_end: bool) -> Result<(), AttemptError> {
        if self.format.is_none() && (self.head.len() >= image_format::SNIFF_LEN || at_end) {
            match image_format::sniff(&self.head) {
                Some(f) => self.format = Some(f),
                None => {
                    return Err(AttemptError::Final(FetchError::Rejected(
                        "content is not a PNG, JPEG, WebP, GIF or AVIF image".into(),
                    )))
                }
            }
        }
        if self.format.is_some() && self.dims.is_none() {
            if let Some((w, h)) = image_format::dimensions(&self.head) {
                if w.saturating_mul(h) > self.max_pixels || w == 0 || h == 0 {
                    return Err(AttemptError::Final(FetchError::Rejected(format!(
                        "image is {w}x{h} pixels, over IMAGE_MAX_PIXELS ({})",
                        self.max_pixels
                    ))));
                }
                self.dims = Some((
                    u32::try_from(w).unwrap_or(u32::MAX),
                    u32::try_from(h).unwrap_or(u32::MAX),
                ));
            } else if at_end || self.head.len() >= HEAD_LIMIT {
                return Err(AttemptError::Final(FetchError::Rejected(
                    "image dimensions could not be read from its header".into(),
                )));
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Downloaded, AttemptError> {
        self.check_head(true)?;
        self.file.flush().await.map_err(storage_error)?;
        self.file.sync_all().await.map_err(storage_error)?;
        let format = self
            .format
            .ok_or_else(|| AttemptError::Final(FetchError::Rejected("empty body".into())))?;
        Ok(Downloaded {
            staged: self.path,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            format,
            dims: self.dims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..30 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP);
            assert!(d >= BACKOFF_BASE / 2);
        }
        assert!(backoff(3) >= Duration::from_millis(400));
    }

    #[test]
    fn ip_literals_are_checked() {
        let m = SourceMatcher::parse("127.0.0.1:9,10.0.0.1,*.example.com", true).unwrap();
        assert!(url_permitted(&m, &"http://127.0.0.1:9/a".parse().unwrap()));
        assert!(url_permitted(&m, &"http://10.0.0.1/a".parse().unwrap()));
        let m = SourceMatcher::parse("*.example.com,[::1]:9", true).unwrap();
        assert!(url_permitted(&m, &"http://[::1]:9/a".parse().unwrap()));
    }
}
