//! The page's stylesheet and script, embedded in the binary: nothing comes
//! from a CDN, and the CSP allows only this listener's own files.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::response::Response;
use http::{header, HeaderValue};

use super::respond::reply;

const CSS: &str = include_str!("../../assets/admin/app.css");
const JS: &str = include_str!("../../assets/admin/app.js");

/// A digest of both files: pages ask for `?v=<digest>`, so browsers may
/// keep the files for a day yet never show a stale one after an upgrade.
static VERSION: LazyLock<String> =
    LazyLock::new(|| crate::ids::sha256_hex(format!("{CSS}{JS}").as_bytes())[..12].to_string());

pub fn version() -> &'static str {
    VERSION.as_str()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return super::pages::error_page(404, "Not found", "No such file."),
    };
    let mut r = reply(200, content_type, body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    r
}
