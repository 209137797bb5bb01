//! Issue 3 ("Never lose an image"): retries, crash recovery, persist modes,
//! hostile sources and a full disk, against the real binary on loopback.
//!
//! One test binary (`cargo test --test reliability`), split by topic:
//! - `retries`: 5xx, 404, truncated bodies and timeouts;
//! - `hostile`: size and pixel caps, non-images, redirects, `data:` URIs;
//! - `ssrf`: loopback and private addresses (IP literals, redirects, DNS);
//! - `modes`: background, on_first_hit, before_response fallback, pending GETs;
//! - `crash`: `kill -9` with downloads in flight, staging sweep at start;
//! - `disk`: a full disk (a small tmpfs, when running as root);
//! - `load`: 100 concurrent calls, and single flight for one source;
//! - `hostile_strings`: issue 11, generated answers full of hostile user text
//!   beside real sources, through the real binary.
//!
//! `raw` is a hand-written HTTP source for faults the FileHost cannot make
//! (a body cut short once, a stalled body, an endless chunked body).

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod disk;
mod hostile;
mod hostile_strings;
mod load;
mod modes;
mod raw;
mod retries;
mod ssrf;

use common::*;
use std::path::{Path, PathBuf};

/// File host + Studio API + a proxy rewriting the file host's http URLs,
/// with `extra` settings on top.
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let proxy = Proxy::start(opts_for(&api, &host, extra)).await;
    Stands { host, api, proxy }
}

/// The usual options plus `extra`.
pub fn opts_for(api: &StudioApi, host: &FileHost, extra: &[(&str, &str)]) -> ProxyOptions {
    let mut opts = ProxyOptions::for_stands(api, host);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    opts
}

/// `POST /v1/images/generate` through the proxy with a JSON request body.
pub async fn generate(p: &Proxy, body: &str) -> Reply {
    fetch(
        client()
            .post(p.url(GEN))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

/// Sets the upstream's generate answer to `{"output": [urls...]}` and calls
/// it once; returns the `output` array of the answer.
pub async fn generate_outputs(s: &Stands, urls: &[String]) -> Vec<serde_json::Value> {
    s.api
        .set_generate_json(&serde_json::json!({ "output": urls }));
    let r = generate(&s.proxy, "{}").await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    r.json()["output"]
        .as_array()
        .expect("output is an array")
        .clone()
}

/// The hosted URL in `v`, parsed; panics when `v` is not one.
#[track_caller]
pub fn hosted(v: &serde_json::Value) -> Hosted {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let h = parse_hosted(s).unwrap_or_else(|| panic!("expected a hosted URL, got {s}"));
    assert!(is_image_id(&h.image_id), "bad image id in {s}");
    h
}

/// The answer kept the original URL of a source.
#[track_caller]
pub fn assert_kept(v: &serde_json::Value, original: &str) {
    assert_eq!(
        v.as_str(),
        Some(original),
        "the original URL must stay in place"
    );
}

/// GET a hosted image through the proxy (by path, whatever its base).
pub async fn get_hosted(p: &Proxy, h: &Hosted) -> Reply {
    fetch(client().get(p.url(&h.path))).await
}

/// A 200 with exactly `bytes`.
#[track_caller]
pub fn assert_serves(r: &Reply, bytes: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: status; body {:?}", r.text());
    assert_same_bytes(&r.body, bytes, what);
    assert_eq!(
        r.h("content-length"),
        bytes.len().to_string(),
        "{what}: Content-Length"
    );
}

/// Files under the storage dir other than internal state (`~state`) and
/// staging (`~staging`): the stored images and their sidecars.
pub fn stored_files(storage: &Path) -> Vec<PathBuf> {
    files_under(storage)
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(storage).unwrap_or(f);
            !rel.starts_with("~state")
                && !rel.starts_with("~staging")
                && !rel.to_string_lossy().starts_with("permaproxy.db")
        })
        .collect()
}

/// Files in `IMAGE_STORAGE_PATH/~staging`.
pub fn staging_files(storage: &Path) -> Vec<PathBuf> {
    files_under(&storage.join("~staging"))
}

/// Is the image `image_id` stored (its bytes, not only a sidecar)?
pub fn is_stored(storage: &Path, image_id: &str) -> bool {
    stored_files(storage).iter().any(|f| {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        name.starts_with(image_id) && !name.ends_with(".json")
    })
}

/// Nothing stored at all, and nothing left in staging.
#[track_caller]
pub fn assert_nothing_stored(storage: &Path, what: &str) {
    let stored = stored_files(storage);
    assert!(stored.is_empty(), "{what}: stored {stored:?}");
    let staged = staging_files(storage);
    assert!(staged.is_empty(), "{what}: left in staging {staged:?}");
}

pub const RETRY: &str = r#"permaproxy_downloads_total{outcome="retry"}"#;
pub const OK: &str = r#"permaproxy_downloads_total{outcome="ok"}"#;
pub const FAILED: &str = r#"permaproxy_downloads_total{outcome="failed"}"#;
pub const REJECTED: &str = r#"permaproxy_downloads_total{outcome="rejected"}"#;

/// Waits until the metric `query` reaches at least `at_least`.
pub async fn wait_metric(p: &Proxy, query: &str, at_least: f64) -> bool {
    wait_until(secs(20), || async { p.metric(query).await >= at_least }).await
}

/// Is this test process root (the owner of `/proc/self` is the effective uid)?
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `log` (the proxy's JSON lines) has a warning that `source` was not stored,
/// giving `reason`. `data:` sources are logged as `data:...`.
#[track_caller]
pub fn assert_logged(log: &str, source: &str, reason: &str) {
    let shown = if source.starts_with("data:") {
        "data:..."
    } else {
        source
    };
    assert!(
        log.lines().any(|l| l.contains("image not stored")
            && l.contains(&format!("\"source\":\"{shown}\""))
            && l.contains(reason)),
        "no log line saying {source} was not stored because of {reason:?}"
    );
}
