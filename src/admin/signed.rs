//! Signed URLs and private images on the admin API (issue 15): minting a
//! signed URL for one image, and setting or clearing its private flag.
//!
//! - `POST /admin/users/{u}/images/{id}/url?ttl=SECS[&w=..&format=..]`
//!   answers `{"url", "path", "expires_at"}`. `ttl` defaults to
//!   IMAGE_URL_TTL_SECS; `0` mints a URL without `exp`. Variant parameters
//!   are checked as a request would be, then signed into the URL.
//! - `PUT .../private` makes the image need a signature even in `sign`
//!   mode; `DELETE .../private` makes it public again. Both answer the
//!   image as the listing shows it.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::routing::{post, put};
use axum::Router;
use serde_json::json;

use super::api::{image_json, parse_key, require_bearer};
use super::respond::{json, unavailable, ApiFail};
use super::Ctx;
use crate::config::SigningMode;
use crate::error::ApiError;
use crate::variants::VariantSpec;

use crate::signing::MAX_TTL_SECS;

type ApiResult = Result<axum::response::Response, ApiFail>;

pub fn routes(ctx: Arc<Ctx>) -> Router<Arc<Ctx>> {
    Router::new()
        .route("/admin/users/{user}/images/{image}/url", post(mint))
        .route(
            "/admin/users/{user}/images/{image}/private",
            put(make_private).delete(make_public),
        )
        .route_layer(axum::middleware::from_fn_with_state(ctx, require_bearer))
}

/// What a mint asks for: a lifetime (`None`: the configured one) and the
/// variant parameters to sign, in the order given.
#[derive(Debug, PartialEq, Eq)]
struct MintQuery {
    ttl: Option<u64>,
    params: Vec<String>,
}

fn parse_mint(query: &str, widths: &[u32]) -> Result<MintQuery, ApiError> {
    let mut ttl = None;
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "ttl" if ttl.is_some() => return Err(ApiError::BadRequest("ttl given twice")),
            "ttl" => match value.parse::<u64>() {
                Ok(n) if n <= MAX_TTL_SECS => ttl = Some(n),
                _ => return Err(ApiError::BadRequest("ttl must be seconds, 0 to 315360000")),
            },
            "exp" | "sig" => return Err(ApiError::BadRequest("exp and sig are set by the mint")),
            _ => params.push(pair.to_string()),
        }
    }
    // The same check a request gets, so a minted URL is one that works.
    VariantSpec::parse(&params.join("&"), widths).map_err(ApiError::BadVariant)?;
    Ok(MintQuery { ttl, params })
}

async fn mint(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let key = parse_key(&user, &image)?;
    let q = parse_mint(q.as_deref().unwrap_or(""), &ctx.cfg.variants.widths)?;
    let signing = &ctx.cfg.signing;
    let signer = match (&signing.signer, signing.mode) {
        (Some(s), mode) if mode != SigningMode::Off => s,
        _ => return Err(ApiError::SigningOff.into()),
    };
    let row = ctx
        .hosting
        .image_record(&key)
        .await
        .map_err(unavailable)?
        .ok_or(ApiError::ImageNotFound)?;
    let now = crate::clock::now_ms() / 1000;
    let ttl = q
        .ttl
        .unwrap_or_else(|| signing.ttl.map_or(0, |t| t.as_secs()));
    let exp = (ttl > 0).then(|| now.saturating_add(ttl));
    let path = row.key.hosted_path(row.format);
    let path_and_query = format!("{path}?{}", signer.sign(&path, &q.params, exp));
    let base = ctx.cfg.public_base_url.as_deref().unwrap_or_default();
    Ok(json(
        200,
        &json!({
            "url": format!("{base}{path_and_query}"),
            "path": path_and_query,
            "expires_at": exp.map(|e| crate::clock::rfc3339(e.saturating_mul(1000))),
        }),
    ))
}

async fn make_private(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
) -> ApiResult {
    set(&ctx, &user, &image, true).await
}

async fn make_public(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
) -> ApiResult {
    set(&ctx, &user, &image, false).await
}

async fn set(ctx: &Ctx, user: &str, image: &str, private: bool) -> ApiResult {
    let key = parse_key(user, image)?;
    // A private image nobody can sign for could never be served again.
    if private && ctx.cfg.signing.mode == SigningMode::Off {
        return Err(ApiError::SigningOff.into());
    }
    let found = ctx
        .hosting
        .set_private(&key, private)
        .await
        .map_err(unavailable)?;
    let row = match found {
        true => ctx.hosting.image_record(&key).await.map_err(unavailable)?,
        false => None,
    };
    let row = row.ok_or(ApiError::ImageNotFound)?;
    Ok(json(200, &image_json(ctx, &row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_queries() {
        let w = [256];
        assert_eq!(
            parse_mint("", &w).unwrap(),
            MintQuery {
                ttl: None,
                params: vec![]
            }
        );
        assert_eq!(
            parse_mint("ttl=60&w=256&format=webp", &w).unwrap(),
            MintQuery {
                ttl: Some(60),
                params: vec!["w=256".into(), "format=webp".into()]
            }
        );
        assert_eq!(parse_mint("ttl=0", &w).unwrap().ttl, Some(0));
        for bad in [
            "ttl=-1",
            "ttl=x",
            "ttl=1&ttl=2",
            "ttl=999999999999",
            "sig=a",
            "exp=1",
        ] {
            assert_eq!(
                parse_mint(bad, &w).unwrap_err().code(),
                "bad_request",
                "{bad}"
            );
        }
        assert_eq!(
            parse_mint("w=300", &w).unwrap_err().code(),
            "width_not_allowed"
        );
        assert_eq!(
            parse_mint("x=1", &w).unwrap_err().code(),
            "unknown_parameter"
        );
    }
}
