//! Image bytes for the admin page's thumbnails and previews. Read from the
//! engine directly: looking at an image here is not a request for it (no
//! view counted, no retention refreshed).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{header, HeaderValue};

use super::api::parse_key;
use super::respond::reply;
use super::views::Page;
use super::Ctx;
use crate::error::ApiError;
use crate::hosting::VariantLookup;
use crate::ids::ImageKey;
use crate::store::{ImageMeta, StoreError};
use crate::variants::VariantSpec;

#[derive(serde::Deserialize, Default)]
pub struct MediaQuery {
    /// A thumbnail this wide (a variant), when IMAGE_VARIANT_WIDTHS has it.
    w: Option<u32>,
}

pub async fn media(
    State(ctx): State<Arc<Ctx>>,
    Path((user, file)): Path<(String, String)>,
    Query(q): Query<MediaQuery>,
) -> Page {
    let key = parse_key(&user, &file)?;
    if let Some(w) = q.w {
        if let Some(r) = thumbnail(&ctx, &key, w).await {
            return Ok(r);
        }
    }
    let meta = ctx
        .hosting
        .image_record(&key)
        .await?
        .and_then(|r| r.stored_meta())
        .ok_or(ApiError::ImageNotFound)?;
    stream(&ctx, &meta).await
}

/// The variant `w` wide, made once and kept like any other. `None` when
/// there is none to give (resizing off, a width not allowed, a format this
/// cannot decode, a transcode refused or busy): the page then shows the
/// original, scaled by the browser.
async fn thumbnail(ctx: &Ctx, key: &ImageKey, w: u32) -> Option<Response> {
    let widths = &ctx.cfg.variants.widths;
    let spec = VariantSpec::parse(&format!("w={w}"), widths).ok()??;
    match ctx.hosting.open_variant(key, spec, None, true).await {
        Ok(VariantLookup::Memory(img)) => {
            let mut r = reply(200, img.meta.content_type(), img.bytes.clone());
            cache_privately(&mut r, img.meta.size);
            Some(r)
        }
        Ok(VariantLookup::Stored(meta)) => stream(ctx, &meta).await.ok(),
        Ok(VariantLookup::Original { .. }) => None,
        Err(e) => {
            tracing::debug!(image = %key, error = ?e, "no thumbnail; the original instead");
            None
        }
    }
}

async fn stream(ctx: &Ctx, meta: &ImageMeta) -> Page {
    let stream = ctx
        .hosting
        .open_stream(meta, None)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::ImageNotFound,
            e => ApiError::StorageUnavailable(e.to_string()),
        })?;
    let mut r = reply(200, meta.content_type(), Body::from_stream(stream));
    cache_privately(&mut r, meta.size);
    Ok(r)
}

/// Immutable bytes, but private: a shared cache must not keep them.
fn cache_privately(r: &mut Response, size: u64) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
}
