//! Issue 4 (operations): rate limits, metrics, health, logs, graceful stop
//! and the command line, against the real permaproxy binary on loopback.
//!
//! One test binary (`cargo test --test operations`), split by topic:
//! - `limits`: the per-client token bucket on hosted images;
//! - `scrape`: `/metrics` before and after traffic, every documented name;
//! - `health`: `/readyz`, `/healthz` and the public health path;
//! - `logs`: JSON access lines and credential redaction;
//! - `shutdown`: SIGTERM while a slow upstream request is in flight;
//! - `cli`: `--help` and `check-config`;
//! - `safe_defaults`: start-time refusals and warnings of the safe defaults;
//! - `demo`: `permaproxy demo`'s walkthrough alone on stdout, its log in a file.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod demo;
mod health;
mod limits;
mod logs;
mod safe_defaults;
mod scrape;
mod shutdown;

pub use common::stands::{generate, stands};
use common::*;
use serde_json::json;

/// Has the proxy store `bytes` (a PNG served by the file host at `path`)
/// through `POST /v1/images/generate`; returns the hosted URL, parsed.
pub async fn store_png(s: &Stands, path: &str, bytes: &[u8]) -> Hosted {
    let src = s.host.add_url(path, bytes.to_vec(), "image/png");
    s.api.set_generate_json(&json!({ "output": [src] }));
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let url = r.json()["output"][0].as_str().unwrap_or("").to_string();
    parse_hosted(&url).unwrap_or_else(|| panic!("not a hosted URL: {url}"))
}

/// `GET {path}` on the proxy's public listener with extra headers.
pub async fn get(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client().get(p.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

/// A 200 answer carrying exactly `bytes`.
#[track_caller]
pub fn assert_ok_bytes(r: &Reply, bytes: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: status; body {:?}", r.text());
    assert_same_bytes(&r.body, bytes, what);
}

/// A loopback URL on which nothing listens.
pub fn dead_upstream() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// Polls `GET {path}` until it answers 200 (or `timeout`); returns that answer.
pub async fn get_until_ok(
    p: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
    timeout: std::time::Duration,
) -> Option<Reply> {
    let ok = std::sync::Mutex::new(None);
    let cell = &ok;
    wait_until(timeout, || async move {
        let r = get(p, path, headers).await;
        let done = r.status == 200;
        if done {
            *cell.lock().unwrap() = Some(r);
        }
        done
    })
    .await;
    ok.into_inner().unwrap()
}

/// Waits until the metric `query` is at least `at_least`. Counters that the
/// access-log hook updates move just after the response is sent.
pub async fn metric_reaches(p: &Proxy, query: &str, at_least: f64) -> bool {
    wait_until(
        secs(10),
        || async move { p.metric(query).await >= at_least },
    )
    .await
}
