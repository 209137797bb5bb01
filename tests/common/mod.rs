//! Support library for permaproxy's integration tests.
//!
//! - [`FileHost`]: a stand-in Replicate file host with fault injection.
//! - [`StudioApi`]: a stand-in Studio API (Express) with echo routes.
//! - [`Proxy`]: the real `permaproxy` binary, started on free loopback ports.
//! - [`fixtures`]: real image bytes and generated PNGs.
//! - [`hostile_json`]: hostile JSON documents and the oracle for their rewrite.
//!
//! Each integration-test file compiles this module on its own and uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod cdn;
pub mod db;
pub mod filehost;
pub mod fixtures;
pub mod hostile_json;
pub mod metrics;
pub mod proxy;
mod server;
pub mod stands;
pub mod studio;
mod util;

pub use filehost::FileHost;
pub use proxy::{Proxy, ProxyOptions};
pub use stands::{admin_stands, Stands, GEN};
pub use studio::{session, Canned, RecordedRequest, StudioApi, TRUSTED_IDS, USER_HEADER};
pub use util::*;

use std::future::Future;
use std::time::{Duration, Instant};

/// A `reqwest::Client` for talking to the proxy: no system proxy, no
/// automatic decompression, no redirect following (tests look at 3xx).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client")
}

/// Polls `cond` every 50 ms until it yields true; returns false on timeout.
/// Use it instead of fixed sleeps: `assert!(wait_until(secs(10), || async { .. }).await)`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, then drop).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The imageId the contract derives from a source URL: `img_` + the first 24
/// hex chars of sha256(url).
pub fn expected_image_id(source_url: &str) -> String {
    format!("img_{}", &sha256_hex(source_url.as_bytes())[..24])
}

/// A hosted URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    /// Everything before `/v1/images/hosted/` (scheme://host[:port]).
    pub base: String,
    pub user: String,
    pub image_id: String,
    pub ext: String,
    /// `/v1/images/hosted/{user}/{image_id}.{ext}`
    pub path: String,
}

/// Parses `{base}/v1/images/hosted/{userId}/{imageId}.{ext}`; None if the
/// string is not of that shape.
pub fn parse_hosted(url: &str) -> Option<Hosted> {
    const MARK: &str = "/v1/images/hosted/";
    let at = url.find(MARK)?;
    let base = url[..at].to_string();
    let rest = &url[at + MARK.len()..];
    let (user, file) = rest.split_once('/')?;
    if user.is_empty() || file.contains('/') {
        return None;
    }
    let (image_id, ext) = file.rsplit_once('.')?;
    Some(Hosted {
        base,
        user: user.to_string(),
        image_id: image_id.to_string(),
        ext: ext.to_string(),
        path: format!("{MARK}{rest}"),
    })
}

/// True when `id` has the contract's imageId shape: `img_` + 24 lowercase hex.
pub fn is_image_id(id: &str) -> bool {
    id.len() == 28
        && id.starts_with("img_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `user` is a safe path segment: `[A-Za-z0-9._-]{1,128}`, not `.`/`..`.
pub fn is_safe_user_segment(user: &str) -> bool {
    (1..=128).contains(&user.len())
        && user != "."
        && user != ".."
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Header value as &str ("" when absent or not text).
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A whole response, read eagerly.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    /// Header value ("" when absent).
    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Every value of a repeated header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}); status {} body {:?}",
                self.status,
                self.text().chars().take(2000).collect::<String>()
            )
        })
    }
}

/// `method path` on the proxy's admin listener with a bearer `token`.
pub async fn admin_call(p: &Proxy, token: &str, method: reqwest::Method, path: &str) -> Reply {
    fetch(
        client()
            .request(method, format!("{}{path}", p.admin()))
            .bearer_auth(token),
    )
    .await
}

/// Sends the request and reads the whole answer.
pub async fn fetch(rb: reqwest::RequestBuilder) -> Reply {
    let resp = rb.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("read body");
    Reply {
        status,
        headers,
        body,
    }
}

/// Every regular file under `dir`, recursively (empty if `dir` is missing).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Compares bytes by length and digest so a failure does not print megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got.len() == want.len() && got == want,
        "{what}: got {} bytes (sha256 {}), want {} bytes (sha256 {})",
        got.len(),
        sha256_hex(got),
        want.len(),
        sha256_hex(want)
    );
}

/// True for `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !(b[10] == b'T' || b[10] == b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || rest == "z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}
