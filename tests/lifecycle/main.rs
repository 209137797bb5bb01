//! Issue 5 (storage lifecycle): retention by last request, the per-user
//! limit, the disk cap, deletes, the admin API, the `cleanup` CLI, and what
//! survives a restart or a lost index. The real permaproxy binary against a
//! stand-in Studio API and a stand-in Replicate file host, all on loopback.
//!
//! One test binary (`cargo test --test lifecycle`), split by topic:
//! - `rules`: per-user limit, retention, disk cap;
//! - `admin`: deletes (cached, by user), auth, listing, stats, metadata;
//! - `persistence`: restarts, a lost database and `reindex`, `permaproxy cleanup [--dry-run]`;
//! - `upgrade`: the first start on a store the previous release wrote;
//! - `namespace`: a Postgres database shared with Studio API;
//! - `purge`: CDN cache tags and purges, against stand-ins of each provider;
//! - `safe_defaults`: claimed ids never evict, and the disk bound holds as images are stored.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod lost;
mod namespace;
mod persistence;
mod purge;
mod rules;
mod safe_defaults;
mod tombstones;
mod upgrade;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const TOKEN: &str = "s3cret-admin-token-padded-to-32-chars";

/// File host + Studio API + a proxy with `ADMIN_TOKEN` = [`TOKEN`] and
/// `extra` settings on top (an empty value removes a setting).
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    admin_stands(TOKEN, extra).await
}

/// One stored image, as a test knows it.
#[derive(Debug, Clone)]
pub struct Img {
    pub hosted: Hosted,
    pub bytes: Vec<u8>,
    pub content_type: String,
}

impl Img {
    pub fn id(&self) -> &str {
        &self.hosted.image_id
    }

    pub fn user(&self) -> &str {
        &self.hosted.user
    }
}

/// Serves `bytes` at `/pbxt/{name}` on the file host, has the upstream answer
/// `extra` + `{"output": [that URL]}`, and generates as `user`. Returns the
/// hosted image once the proxy has stored it (the default persist mode
/// stores before the response leaves).
pub async fn store_with(
    s: &Stands,
    user: &str,
    name: &str,
    bytes: &[u8],
    content_type: &str,
    extra: Value,
) -> Img {
    let path = format!("/pbxt/{name}");
    let src = s.host.add_url(&path, bytes.to_vec(), content_type);
    let mut answer = extra;
    answer["output"] = json!([src]);
    s.api.set_generate_json(&answer);
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", user)
            .header("authorization", session(user))
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let url = r.json()["output"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no hosted URL in {}", r.text()))
        .to_string();
    let hosted = parse_hosted(&url).unwrap_or_else(|| panic!("not a hosted URL: {url}"));
    assert_eq!(hosted.user, user);
    assert_eq!(hosted.image_id, expected_image_id(&src));
    // The source is gone from now on: whatever is served comes from storage.
    s.host.expire(&path);
    Img {
        hosted,
        bytes: bytes.to_vec(),
        content_type: content_type.to_string(),
    }
}

/// [`store_with`] for a PNG and no other member in the answer.
pub async fn store_png(s: &Stands, user: &str, name: &str, bytes: &[u8]) -> Img {
    store_with(s, user, name, bytes, "image/png", json!({})).await
}

/// GET the hosted image through the proxy (this counts as a request).
pub async fn get(p: &Proxy, img: &Img) -> Reply {
    fetch(client().get(p.url(&img.hosted.path))).await
}

/// Asserts the image is served whole, with its Content-Type.
#[track_caller]
pub fn assert_served(r: &Reply, img: &Img, what: &str) {
    assert_eq!(r.status, 200, "{what}: status, body {:?}", r.text());
    assert_same_bytes(&r.body, &img.bytes, what);
    assert_eq!(
        r.h("content-type"),
        img.content_type,
        "{what}: Content-Type"
    );
}

/// Asserts the image is not served: `410 image_gone` for a deleted one
/// (issue 20, finding 17), or `404 image_not_found`, with the JSON body.
#[track_caller]
pub fn assert_gone(r: &Reply, what: &str) {
    let body: String = r.text().chars().take(200).collect();
    let code = match r.status {
        410 => "image_gone",
        404 => "image_not_found",
        other => panic!("{what}: status {other}, body {body:?}"),
    };
    assert_eq!(r.json()["code"], code, "{what}: {}", r.text());
}

/// Asserts `410 image_gone` with this reason.
#[track_caller]
pub fn assert_deleted(r: &Reply, reason: &str, what: &str) {
    assert_eq!(r.status, 410, "{what}: {}", r.text());
    assert_eq!(r.json()["code"], "image_gone", "{what}");
    assert_eq!(r.json()["reason"], reason, "{what}");
}

/// An admin request with `Authorization: Bearer {token}` (none when `None`).
pub async fn admin_req(
    p: &Proxy,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> Reply {
    let mut rb = client().request(method, format!("{}{path}", p.admin()));
    if let Some(t) = token {
        rb = rb.header("authorization", format!("Bearer {t}"));
    }
    fetch(rb).await
}

/// GET an admin route with the right token; asserts 200 and returns the JSON.
pub async fn admin_json(p: &Proxy, path: &str) -> Value {
    let r = admin_req(p, reqwest::Method::GET, path, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// DELETE an admin route with the right token; returns the status.
pub async fn admin_delete(p: &Proxy, path: &str) -> u16 {
    admin_req(p, reqwest::Method::DELETE, path, Some(TOKEN))
        .await
        .status
}

/// `POST /admin/cleanup[?dry_run=true]`; asserts 200 and returns the JSON.
pub async fn admin_cleanup(p: &Proxy, dry_run: bool) -> Value {
    let path = if dry_run {
        "/admin/cleanup?dry_run=true"
    } else {
        "/admin/cleanup"
    };
    let r = admin_req(p, reqwest::Method::POST, path, Some(TOKEN)).await;
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    r.json()
}

/// Every image id of `user`, following the listing's `next` cursors.
pub async fn listed_ids(p: &Proxy, user: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/users/{user}/images?limit=100&cursor={c}"),
            None => format!("/admin/users/{user}/images?limit=100"),
        };
        let page = admin_json(p, &path).await;
        for item in page["images"].as_array().expect("images array") {
            ids.push(item["id"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    ids.sort();
    ids
}

/// `(images, bytes)` from `GET /admin/stats`.
pub async fn stats_totals(p: &Proxy) -> (u64, u64) {
    let s = admin_json(p, "/admin/stats").await;
    (
        s["images"].as_u64().expect("images"),
        s["bytes"].as_u64().expect("bytes"),
    )
}

/// The files of one image on disk (the image and its sidecar).
pub fn files_of(storage: &Path, img: &Img) -> Vec<PathBuf> {
    files_under(&storage.join(img.user()))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}.", img.id())))
        })
        .collect()
}

/// `{storage}/{user}/{id}.{ext}`
pub fn image_file(storage: &Path, img: &Img) -> PathBuf {
    storage
        .join(img.user())
        .join(format!("{}.{}", img.id(), img.hosted.ext))
}

/// `{storage}/{user}/{id}.json`
pub fn sidecar_file(storage: &Path, img: &Img) -> PathBuf {
    storage.join(img.user()).join(format!("{}.json", img.id()))
}

/// Asserts both files of the image are on disk.
#[track_caller]
pub fn assert_on_disk(storage: &Path, img: &Img) {
    assert!(
        image_file(storage, img).is_file(),
        "{} missing",
        image_file(storage, img).display()
    );
    assert!(
        sidecar_file(storage, img).is_file(),
        "{} missing",
        sidecar_file(storage, img).display()
    );
}

/// Asserts nothing of the image is left on disk.
#[track_caller]
pub fn assert_not_on_disk(storage: &Path, img: &Img) {
    let left = files_of(storage, img);
    assert!(left.is_empty(), "files of a deleted image remain: {left:?}");
}

/// The ids in a cleanup answer's `deleted` list with `reason`, sorted.
pub fn deleted_ids(answer: &Value, reason: &str) -> Vec<String> {
    let mut ids: Vec<String> = answer["deleted"]
        .as_array()
        .unwrap_or_else(|| panic!("no deleted list in {answer}"))
        .iter()
        .filter(|d| d["reason"] == reason)
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

/// Sorted owned ids.
pub fn ids(imgs: &[&Img]) -> Vec<String> {
    let mut v: Vec<String> = imgs.iter().map(|i| i.id().to_string()).collect();
    v.sort();
    v
}
