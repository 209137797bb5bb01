//! Issue 17: the admin web page, against the real permaproxy binary.
//!
//! One test binary (`cargo test --test admin_ui`):
//! - `browser`: a real headless Chromium (Debian's, driven by
//!   playwright-core from `browser.mjs`) logs in, counts and decodes a
//!   gallery's thumbnails, deletes an image, is refused a forged POST,
//!   downloads an export, and sees hostile text as text; it also takes the
//!   README's screenshots;
//! - `http`: the same contract over plain HTTP where no browser is needed
//!   (cookie flags, headers, the zip's bytes, escaping, retry, views,
//!   cleanup preview, the page off without a token).

#[path = "../common/mod.rs"]
mod common;

mod art;
mod browser;
mod http;
mod thumbs;

use common::*;
use serde_json::{json, Value};

pub const TOKEN: &str = "ui-admin-token-0123456789-padded-to-32-chars";
pub const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// File host + Studio API + a proxy with `ADMIN_TOKEN` = [`TOKEN`] and
/// `extra` settings (an empty value removes a setting).
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    admin_stands(TOKEN, extra).await
}

/// One image as a test knows it.
#[derive(Debug, Clone)]
pub struct Img {
    pub hosted: Hosted,
    pub source: String,
    pub bytes: Vec<u8>,
}

impl Img {
    pub fn id(&self) -> &str {
        &self.hosted.image_id
    }
}

/// Serves `bytes` as a PNG at `/pbxt/{name}{query}` and has `user` generate
/// it; returns it once stored (the default persist mode stores first).
pub async fn store(s: &Stands, user: &str, name: &str, query: &str, bytes: Vec<u8>) -> Img {
    let path = format!("/pbxt/{name}");
    let source = format!(
        "{}{query}",
        s.host.add_url(&path, bytes.clone(), "image/png")
    );
    s.api.set_generate_json(&json!({ "output": [source] }));
    let r = generate_as(s, user).await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let url = r.json()["output"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let hosted = parse_hosted(&url).unwrap_or_else(|| panic!("not hosted: {}", r.text()));
    Img {
        hosted,
        source,
        bytes,
    }
}

pub async fn generate_as(s: &Stands, user: &str) -> Reply {
    fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", user)
            .body("{}"),
    )
    .await
}

/// A source that answers 404: the download fails for good. Returns the
/// image id the proxy handed out.
pub async fn fail_one(s: &Stands, user: &str, name: &str) -> String {
    let source = s.host.url(&format!("/pbxt/{name}"));
    s.api.set_generate_json(&json!({ "output": [source] }));
    let r = generate_as(s, user).await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    expected_image_id(&source)
}

/// Logs in over plain HTTP; returns the `Cookie` header value to send.
pub async fn login(p: &Proxy) -> String {
    let r = fetch(
        client()
            .post(format!("{}/admin/ui/login", p.admin()))
            .form(&[("token", TOKEN)]),
    )
    .await;
    assert_eq!(r.status, 303, "login: {}", r.text());
    let set = r.h("set-cookie").to_string();
    set.split(';').next().unwrap_or_default().to_string()
}

/// GET an admin page with a session cookie.
pub async fn page(p: &Proxy, cookie: &str, path: &str) -> Reply {
    fetch(
        client()
            .get(format!("{}{path}", p.admin()))
            .header("cookie", cookie),
    )
    .await
}

/// The CSRF token in a page's forms.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in the page"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap_or(0)].to_string()
}

/// POST a form to the admin listener with a session cookie.
pub async fn post_form(p: &Proxy, cookie: &str, path: &str, form: &[(&str, &str)]) -> Reply {
    fetch(
        client()
            .post(format!("{}{path}", p.admin()))
            .header("cookie", cookie)
            .form(form),
    )
    .await
}

/// Waits until the batched request counts of `user/id` reach `n`.
pub async fn wait_views(p: &Proxy, user: &str, id: &str, n: u64) -> bool {
    let db = p.db().await;
    let cond = format!("user_id = '{user}' AND image_id = '{id}' AND views >= {n}");
    let ok = wait_until(secs(20), || async { db.count(&cond).await == 1 }).await;
    db.close().await;
    ok
}

/// Entries of a zip: (name, bytes).
pub fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a valid zip");
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).expect("zip entry");
            let name = f.name().expect("entry name").to_string();
            let mut out = Vec::new();
            f.read_to_end(&mut out).expect("read zip entry");
            (name, out)
        })
        .collect()
}

/// Checks an export of `imgs`: every original byte for byte, and a
/// manifest describing each.
#[track_caller]
pub fn assert_export(zip: &[u8], user: &str, imgs: &[&Img]) {
    let entries = unzip(zip);
    assert_eq!(entries.len(), imgs.len() + 1, "images + manifest");
    let manifest = entries
        .iter()
        .find(|(n, _)| n == "manifest.json")
        .expect("manifest.json");
    let m: Value = serde_json::from_slice(&manifest.1).expect("manifest is JSON");
    assert_eq!(m["user_id"], user);
    assert_eq!(m["count"], imgs.len());
    for img in imgs {
        let file = format!("{}.{}", img.id(), img.hosted.ext);
        let (_, bytes) = entries
            .iter()
            .find(|(n, _)| *n == file)
            .unwrap_or_else(|| panic!("{file} missing from the zip"));
        assert_same_bytes(bytes, &img.bytes, &file);
        let item = m["images"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["file"] == file.as_str()))
            .unwrap_or_else(|| panic!("{file} missing from the manifest: {m}"));
        assert!(
            item["hosted_url"]
                .as_str()
                .is_some_and(|u| u.ends_with(&img.hosted.path)),
            "{item}"
        );
        assert_eq!(item["source_url"], img.source.as_str(), "{item}");
        assert_eq!(item["size_bytes"], img.bytes.len(), "{item}");
        assert!(
            is_rfc3339(item["created_at"].as_str().unwrap_or("")),
            "{item}"
        );
        assert!(item["views"].is_u64(), "{item}");
    }
}

/// Writes straight into the proxy's database: how rows an older release
/// wrote (its journal imported as is) can hold any text at all.
pub async fn db_execute(p: &Proxy, sql: &str, binds: &[&str]) {
    sqlx::any::install_default_drivers();
    let url = p.database_url();
    let url = if url.starts_with("sqlite:") {
        format!("{url}?mode=rw")
    } else {
        common::db::in_schema(url)
    };
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .expect("open the database");
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&pool).await.expect("update the database");
    pool.close().await;
}

/// Gives `user/id` a source URL and a last error holding [`HOSTILE`].
pub async fn make_hostile(p: &Proxy, user: &str, id: &str) {
    let source = format!("https://replicate.delivery/pbxt/x/out-0.png?q={HOSTILE}");
    let error = format!("source answered 404: {HOSTILE}");
    db_execute(
        p,
        "UPDATE hosted_images SET source_url = $1, last_error = $2 \
         WHERE user_id = $3 AND image_id = $4",
        &[&source, &error, user, id],
    )
    .await;
}
