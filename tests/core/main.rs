//! Issue 2 (core): the real permaproxy binary against a stand-in Studio API
//! and a stand-in Replicate file host, all on loopback.
//!
//! One test binary (`cargo test --test core`), split by topic:
//! - `passthrough`: fidelity of forwarded traffic, 502 on a dead upstream;
//! - `rewrite`: which URLs are rewritten and which are left alone;
//! - `serving`: persisted images, conditional/range requests, 404/400 cases;
//! - `config`: user ids, base URL, hosting off, bad settings, signals, admin;
//! - `safe_config`: issue 20's shared setting names, start-time refusals,
//!   the admin throttle and the default source hosts.

#[path = "../common/mod.rs"]
mod common;

mod config;
mod passthrough;
mod rewrite;
mod safe_config;
mod serving;

pub use common::stands::{generate, stands};
use common::*;

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Sets the upstream's generate answer to `200 application/json; charset=utf-8` with `raw`.
pub fn answer_json(api: &StudioApi, raw: &str) {
    api.set_generate_response(200, "application/json; charset=utf-8", raw.to_string());
}

/// Asserts `url` is a hosted URL on `base` for `user` with `ext`, and returns it parsed.
#[track_caller]
pub fn hosted(url: &serde_json::Value, base: &str, user: &str, ext: &str) -> Hosted {
    let s = url
        .as_str()
        .unwrap_or_else(|| panic!("expected a hosted URL string, got {url}"));
    let h = parse_hosted(s).unwrap_or_else(|| panic!("not a hosted URL: {s}"));
    assert_eq!(h.base, base, "base of {s}");
    assert_eq!(h.user, user, "userId of {s}");
    assert!(
        is_image_id(&h.image_id),
        "imageId of {s} is not img_ + 24 hex"
    );
    assert_eq!(h.ext, ext, "extension of {s}");
    h
}

/// GET a hosted image through the proxy (by path, whatever its base).
pub async fn get_hosted(p: &Proxy, h: &Hosted, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client().get(p.url(&h.path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

/// A full 200 answer for a stored image: exact bytes and every caching header.
#[track_caller]
pub fn assert_image_response(r: &Reply, bytes: &[u8], content_type: &str) {
    assert_eq!(r.status, 200, "hosted GET status; body {:?}", r.text());
    assert_same_bytes(&r.body, bytes, "hosted image bytes");
    assert_eq!(r.h("content-type"), content_type);
    assert_eq!(r.h("content-length"), bytes.len().to_string());
    assert_eq!(r.h("cache-control"), IMMUTABLE);
    assert_eq!(r.h("accept-ranges"), "bytes");
    let etag = r.h("etag");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "ETag must be strong and quoted, got {etag:?}"
    );
    assert!(
        r.h("last-modified").ends_with(" GMT"),
        "Last-Modified: {:?}",
        r.h("last-modified")
    );
}

/// Content-Length is present and equals the body length.
#[track_caller]
pub fn assert_content_length(r: &Reply) {
    assert_eq!(
        r.h("content-length"),
        r.body.len().to_string(),
        "Content-Length must match the body"
    );
}

/// The `needles` appear in `text` in this order (first occurrences).
#[track_caller]
pub fn assert_in_order(text: &str, needles: &[&str]) {
    let pos: Vec<usize> = needles
        .iter()
        .map(|n| text.find(n).unwrap_or_else(|| panic!("{n} not in {text}")))
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "order of {needles:?} changed in {text}"
    );
}
