//! The JSON admin API and the health routes, exactly as they answered on
//! the Pingora listener: every `/admin/` route needs the bearer token (403
//! without `ADMIN_TOKEN`, 401 for a missing or wrong one), errors are
//! [`ApiError`] bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;

use super::respond::{api_error, json, reply, unavailable, ApiFail};
use super::Ctx;
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{ImageId, ImageKey, UserId};
use crate::metrics;
use crate::repo::{Cursor, ImageRecord, ImageState};

const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

type ApiResult = Result<Response, ApiFail>;

/// The bearer-token routes. Adding one is one line here.
pub fn routes(ctx: Arc<Ctx>) -> Router<Arc<Ctx>> {
    Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/failed", get(failed))
        .route("/admin/cleanup", post(cleanup))
        .route("/admin/users/{user}/images", get(list))
        .route("/admin/users/{user}/images/{image}", delete(delete_one))
        .route("/admin/users/{user}", delete(delete_user))
        .route_layer(axum::middleware::from_fn_with_state(ctx, require_bearer))
}

/// Health and metrics: no token, as before.
pub fn open_routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
}

pub async fn require_bearer(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match ctx.check_bearer(&parts) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => api_error(&e),
    }
}

/// Anything no route matched (or matched with another method): under
/// `/admin/` the token is checked first, as it always was, so an unknown
/// route tells nothing to a caller without it.
pub async fn fallback(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/admin/ui" || path.starts_with("/admin/ui/") {
        return super::ui::not_found(&ctx, &req);
    }
    if path.starts_with("/admin/") {
        let (parts, _) = req.into_parts();
        if let Err(e) = ctx.check_bearer(&parts) {
            return api_error(&e);
        }
        return json(
            404,
            &json!({"error": "no such admin route", "code": "not_found"}),
        );
    }
    json(404, &json!({"error": "not found", "code": "not_found"}))
}

async fn healthz() -> Response {
    json(200, &json!({"status": "ok"}))
}

async fn prometheus(State(ctx): State<Arc<Ctx>>) -> Response {
    ctx.hosting.publish_gauges().await;
    reply(200, "text/plain; version=0.0.4", metrics::render())
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    // Once SIGTERM has started the drain, say so at once: the point is that
    // a load balancer stops sending here before the listeners close.
    if crate::shutdown::draining() {
        return json(503, &json!({"status": "draining"}));
    }
    let storage = ctx.hosting.ready().await;
    let up = &ctx.cfg.upstream;
    let upstream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((up.host.as_str(), up.port)),
    )
    .await;
    let storage_ok = storage.is_ok();
    let upstream_ok = matches!(upstream, Ok(Ok(_)));
    let status = if storage_ok && upstream_ok { 200 } else { 503 };
    json(
        status,
        &json!({
            "status": if status == 200 { "ready" } else { "not_ready" },
            "storage": storage.err().unwrap_or_else(|| "ok".to_string()),
            "upstream": if upstream_ok { "ok" } else { "unreachable" },
        }),
    )
}

async fn cleanup(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query(q.as_deref().unwrap_or(""));
    let dry_run = matches!(q.get("dry_run"), Some("true" | "1"));
    let report = ctx.hosting.cleanup(dry_run).await.map_err(unavailable)?;
    Ok(json(
        200,
        &json!({"dry_run": dry_run, "deleted": report.deleted, "failed_forgotten": report.failed_forgotten}),
    ))
}

/// An image as the API and the export manifest describe it.
pub fn image_json(ctx: &Ctx, r: &ImageRecord) -> serde_json::Value {
    let expires = r.requested_at + crate::clock::ms(ctx.cfg.lifecycle.max_age);
    let stored = r.state == ImageState::Stored;
    json!({
        "id": r.key.id.as_str(),
        "user_id": r.key.user.as_str(),
        "state": r.state.as_str(),
        "url": ctx.hosted_url(r),
        "file_path": stored.then(|| r.key.relative_path(r.format)),
        "size_bytes": stored.then_some(r.size),
        "content_type": stored.then(|| r.format.content_type()),
        "width": r.width,
        "height": r.height,
        "sha256": stored.then_some(r.sha256.as_str()),
        "source_url": r.source_url,
        "replicate_prediction_id": r.prediction_id,
        "created_at": rfc3339(r.created_at),
        "stored_at": r.stored_at.map(rfc3339),
        "accessed_at": rfc3339(r.requested_at),
        "expires_at": rfc3339(expires),
        "views": r.views,
        "private": r.private,
        "attempts": r.attempts,
        "last_error": r.last_error,
    })
}

pub fn parse_user(user: &str) -> Result<UserId, ApiError> {
    UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))
}

async fn list(
    State(ctx): State<Arc<Ctx>>,
    Path(user): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query(q.as_deref().unwrap_or(""));
    let user = parse_user(&user)?;
    let limit = q.limit();
    let cursor = q.get("cursor").and_then(ImageId::parse);
    let rows = ctx
        .hosting
        .user_images(&user, cursor.as_ref(), limit + 1)
        .await
        .map_err(unavailable)?;
    let next = (rows.len() > limit as usize)
        .then(|| rows.get(limit as usize - 1).map(|r| r.key.id.to_string()))
        .flatten();
    let images: Vec<_> = rows
        .iter()
        .take(limit as usize)
        .map(|r| image_json(&ctx, r))
        .collect();
    Ok(json(200, &json!({"images": images, "next": next})))
}

/// An image id in a path, with or without its extension.
pub fn parse_image(image: &str) -> Option<ImageId> {
    let id = image.split_once('.').map_or(image, |(id, _)| id);
    ImageId::parse(id)
}

/// `{user}` and `{image}` of an admin path: a bad user id is 400, an image
/// id that cannot exist is 404.
pub fn parse_key(user: &str, image: &str) -> Result<ImageKey, ApiError> {
    let user = parse_user(user)?;
    let id = parse_image(image).ok_or(ApiError::ImageNotFound)?;
    Ok(ImageKey::new(user, id))
}

async fn delete_one(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
) -> ApiResult {
    let key = parse_key(&user, &image)?;
    let existed = ctx.hosting.delete_image(&key).await.map_err(unavailable)?;
    if !existed {
        return Err(ApiError::ImageNotFound.into());
    }
    Ok(reply(204, "application/json", Vec::new()))
}

async fn delete_user(State(ctx): State<Arc<Ctx>>, Path(user): Path<String>) -> ApiResult {
    let user = parse_user(&user)?;
    ctx.hosting.delete_user(&user).await.map_err(unavailable)?;
    Ok(reply(204, "application/json", Vec::new()))
}

async fn stats(State(ctx): State<Arc<Ctx>>) -> ApiResult {
    let t = ctx.hosting.totals().await.map_err(unavailable)?;
    let top: Vec<_> = ctx
        .hosting
        .top_users(20)
        .await
        .map_err(unavailable)?
        .into_iter()
        .map(|u| json!({"user_id": u.user.as_str(), "images": u.images, "bytes": u.bytes}))
        .collect();
    Ok(json(
        200,
        &json!({
            "images": t.images,
            "bytes": t.bytes,
            "pending": t.pending,
            "failed": t.failed,
            "top_users": top,
            "database": ctx.hosting.database_name(),
            "store": ctx.hosting.store_name(),
        }),
    ))
}

/// Newest failures first, a page at a time; `cursor` is the `next` of
/// the previous page.
async fn failed(State(ctx): State<Arc<Ctx>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query(q.as_deref().unwrap_or(""));
    let limit = q.limit();
    let cursor = q.get("cursor").and_then(parse_cursor);
    let rows = ctx
        .hosting
        .failed(cursor.as_ref(), limit + 1)
        .await
        .map_err(unavailable)?;
    let next = (rows.len() > limit as usize)
        .then(|| rows.get(limit as usize - 1).map(failed_cursor))
        .flatten();
    let failed: Vec<_> = rows
        .iter()
        .take(limit as usize)
        .map(|r| {
            json!({
                "user_id": r.key.user.as_str(),
                "id": r.key.id.as_str(),
                "source": r.source_url,
                "reason": r.last_error,
                "attempts": r.attempts,
                "failed_at": r.failed_at.map(rfc3339),
            })
        })
        .collect();
    Ok(json(200, &json!({"failed": failed, "next": next})))
}

/// `{failed_at}~{user}~{image}`: a keyset cursor into the failed list.
pub fn failed_cursor(r: &ImageRecord) -> String {
    format!("{}~{}~{}", r.failed_at.unwrap_or(0), r.key.user, r.key.id)
}

pub fn parse_cursor(s: &str) -> Option<Cursor> {
    let mut parts = s.splitn(3, '~');
    let at = parts.next()?.parse().ok()?;
    let user = UserId::parse(parts.next()?)?;
    let id = ImageId::parse(parts.next()?)?;
    Some(Cursor {
        at,
        key: ImageKey::new(user, id),
    })
}

/// Query parameters, parsed without allocation or decoding, as the API
/// always read them (cursors and limits need neither).
struct Query<'a>(&'a str);

impl Query<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .split('&')
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    }

    fn limit(&self) -> u32 {
        self.get("limit")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(PAGE_DEFAULT)
            .clamp(1, PAGE_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_cursors() {
        let q = Query("limit=5&cursor=abc&dry_run=1");
        assert_eq!((q.limit(), q.get("cursor")), (5, Some("abc")));
        assert_eq!(Query("limit=0").limit(), 1);
        assert_eq!(Query("limit=99999").limit(), PAGE_MAX);
        assert_eq!(Query("").limit(), PAGE_DEFAULT);
        let c = parse_cursor("12~u_1~img_0123456789abcdef01234567").unwrap();
        assert_eq!((c.at, c.key.user.as_str()), (12, "u_1"));
        assert!(parse_cursor("x~u~img_0123456789abcdef01234567").is_none());
        assert_eq!(
            parse_image("img_0123456789abcdef01234567.png").map(|i| i.to_string()),
            Some("img_0123456789abcdef01234567".to_string())
        );
    }
}
