//! Issue 14 (variants): thumbnails and modern formats on request, and
//! smaller storage. The real permaproxy binary against a stand-in Studio API
//! and a stand-in Replicate file host; every variant is checked by decoding
//! its bytes.
//!
//! One test binary (`cargo test --test variants`), split by topic:
//! - `resize`: PNG, WebP and JPEG resized; headers, Range, 304; no upscale;
//!   stored once, served after a restart without a second make;
//! - `negotiation`: `format=auto` under three `Accept` headers, `Vary`;
//! - `refusals`: 400 naming the parameter, 503 when the pool is full, a
//!   pixel bomb refused without the memory it would take;
//! - `flight`: 20 concurrent requests, one transcode;
//! - `lifecycle`: deleting an image deletes its variants (admin, per-user
//!   limit, disk cap), and variants do not count against the user limit;
//! - `ingest`: EXIF stripped and ICC kept, in variants and on ingest;
//!   `IMAGE_STORE_FORMAT=webp` stores WebP, and by how much smaller.

#[path = "../common/mod.rs"]
mod common;

mod flight;
mod ingest;
mod lifecycle;
mod negotiation;
mod refusals;
mod resize;

use common::stands::generate;
use common::*;
use serde_json::json;

pub const TOKEN: &str = "variants-admin-token-padded-to-32-chars";
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A real photograph, 451x300 (scikit-image's `chelsea`, CC0).
pub const PHOTO: &[u8] = include_bytes!("../fixtures/photo.png");
/// 20000x20000 pixels in 48 KB (see tests/fixtures/make_variant_fixtures.py).
pub const BOMB: &[u8] = include_bytes!("../fixtures/bomb.png");

/// File host + Studio API + a proxy with an admin token and `extra`.
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let mut opts = ProxyOptions::for_stands(&api, &host).env("ADMIN_TOKEN", TOKEN);
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    let proxy = Proxy::start(opts).await;
    Stands { host, api, proxy }
}

/// Stores `bytes` as user `user` through a generate call; returns its
/// hosted URL once stored (the default persist mode waits for it).
pub async fn host(s: &Stands, name: &str, bytes: &[u8], user: &str) -> Hosted {
    let ct = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::Avif) => "image/avif",
        _ => "image/png",
    };
    let src = s.host.add_url(&format!("/pbxt/{name}"), bytes.to_vec(), ct);
    s.api.set_generate_json(&json!({"output": [src]}));
    let r = generate(
        &s.proxy,
        "{}",
        &[("x-user-id", user), ("authorization", &session(user))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["output"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    parse_hosted(&url).unwrap_or_else(|| panic!("not hosted: {url}"))
}

/// GET the hosted image with a query and headers.
pub async fn get(p: &Proxy, h: &Hosted, query: &str, headers: &[(&str, &str)]) -> Reply {
    let url = if query.is_empty() {
        p.url(&h.path)
    } else {
        p.url(&format!("{}?{query}", h.path))
    };
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

/// The body decoded: its format by its bytes, and its dimensions.
#[track_caller]
pub fn decoded(r: &Reply) -> (image::ImageFormat, u32, u32) {
    assert_eq!(r.status, 200, "status; body {:?}", r.text());
    let format = image::guess_format(&r.body).expect("an image format");
    if format == image::ImageFormat::Avif {
        // No AVIF decoder in this build: the header says what it is.
        let size = imagesize::blob_size(&r.body).expect("AVIF dimensions");
        return (format, size.width as u32, size.height as u32);
    }
    let img = image::load_from_memory(&r.body).expect("the body decodes");
    (format, img.width(), img.height())
}

/// `permaproxy_variants_total{outcome}`.
pub async fn variants_total(p: &Proxy, outcome: &str) -> f64 {
    p.metric(&format!(
        "permaproxy_variants_total{{outcome=\"{outcome}\"}}"
    ))
    .await
}

/// Transcodes the pool ran (variants and ingest conversions).
pub async fn transcodes(p: &Proxy) -> f64 {
    p.metric("permaproxy_transcode_duration_seconds_count")
        .await
}

/// Files under the image's variant folder on disk.
pub fn variant_files(p: &Proxy, h: &Hosted) -> Vec<std::path::PathBuf> {
    files_under(
        &p.storage_path()
            .join(&h.user)
            .join(format!("{}.v", h.image_id)),
    )
}

/// An encoding of `img` in `format` (the test's own inputs).
pub fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// The photograph as JPEG and as (lossless) WebP, so that every input
/// format is a real picture.
pub fn photo_as(format: image::ImageFormat) -> Vec<u8> {
    let img = image::load_from_memory(PHOTO).expect("photo decodes");
    encode(&image::DynamicImage::ImageRgb8(img.to_rgb8()), format)
}

/// Rows of `image_variants` for an image.
pub async fn variant_rows(p: &Proxy, h: &Hosted) -> u64 {
    let db = p.db().await;
    let n = db
        .count_variants(&format!(
            "user_id = '{}' AND image_id = '{}'",
            h.user, h.image_id
        ))
        .await;
    db.close().await;
    n
}
