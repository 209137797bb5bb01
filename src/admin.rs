//! The private admin listener: liveness, readiness, metrics and the admin
//! API. It must never be reachable from the internet; the admin routes also
//! require `Authorization: Bearer $ADMIN_TOKEN`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::error::ApiError;
use crate::hosting::Hosting;
use crate::ids::{ImageId, ImageKey, UserId};
use crate::metrics;
use crate::repo::{Cursor, ImageRecord, ImageState};

const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

pub struct Admin {
    pub cfg: Arc<Config>,
    pub hosting: Arc<Hosting>,
}

type Reply = Response<Vec<u8>>;

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn json_reply(status: u16, v: serde_json::Value) -> Reply {
    reply(
        status,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default(),
    )
}

fn error_reply(e: &ApiError) -> Reply {
    let mut r = reply(e.status(), "application/json", e.body().to_vec());
    for (k, v) in e.extra_headers() {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Reply {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (method.clone(), path.as_str()) {
            (Method::GET, "/healthz") => json_reply(200, json!({"status": "ok"})),
            (Method::GET, "/readyz") => self.readyz().await,
            (Method::GET, "/metrics") => {
                self.hosting.publish_gauges().await;
                reply(200, "text/plain; version=0.0.4", metrics::render())
            }
            (_, p) if p.starts_with("/admin/") => {
                if let Err(e) = self.authorize(auth.as_deref()) {
                    return error_reply(&e);
                }
                self.admin(method, p, &query)
                    .await
                    .unwrap_or_else(|e| error_reply(&e))
            }
            _ => json_reply(404, json!({"error": "not found", "code": "not_found"})),
        }
    }
}

impl Admin {
    fn authorize(&self, header: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = &self.cfg.admin_token else {
            return Err(ApiError::AdminDisabled);
        };
        let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        // Constant time, so response timing does not leak the token.
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    async fn readyz(&self) -> Reply {
        let storage = self.hosting.ready().await;
        let up = &self.cfg.upstream;
        let upstream = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect((up.host.as_str(), up.port)),
        )
        .await;
        let storage_ok = storage.is_ok();
        let upstream_ok = matches!(upstream, Ok(Ok(_)));
        let status = if storage_ok && upstream_ok { 200 } else { 503 };
        json_reply(
            status,
            json!({
                "status": if status == 200 { "ready" } else { "not_ready" },
                "storage": storage.err().unwrap_or_else(|| "ok".to_string()),
                "upstream": if upstream_ok { "ok" } else { "unreachable" },
            }),
        )
    }

    async fn admin(&self, method: Method, path: &str, query: &str) -> Result<Reply, ApiError> {
        let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
        let q = Query(query);
        match (method, parts.as_slice()) {
            (Method::GET, ["stats"]) => self.stats().await,
            (Method::GET, ["failed"]) => self.failed(&q).await,
            (Method::POST, ["cleanup"]) => {
                let dry_run = matches!(q.get("dry_run"), Some("true" | "1"));
                let report = self.hosting.cleanup(dry_run).await.map_err(unavailable)?;
                Ok(json_reply(
                    200,
                    json!({"dry_run": dry_run, "deleted": report.deleted, "failed_forgotten": report.failed_forgotten}),
                ))
            }
            (Method::GET, ["users", user, "images"]) => self.list(user, &q).await,
            (Method::DELETE, ["users", user, "images", image]) => {
                self.delete_one(user, image).await
            }
            (Method::DELETE, ["users", user]) => self.delete_user(user).await,
            _ => Ok(json_reply(
                404,
                json!({"error": "no such admin route", "code": "not_found"}),
            )),
        }
    }

    fn image_json(&self, r: &ImageRecord) -> serde_json::Value {
        let base = self.cfg.public_base_url.clone().unwrap_or_default();
        let expires = r.requested_at + crate::clock::ms(self.cfg.lifecycle.max_age);
        let stored = r.state == ImageState::Stored;
        json!({
            "id": r.key.id.as_str(),
            "user_id": r.key.user.as_str(),
            "state": r.state.as_str(),
            "url": format!("{base}{}", r.key.hosted_path(r.format)),
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
            "attempts": r.attempts,
            "last_error": r.last_error,
        })
    }

    async fn list(&self, user: &str, q: &Query<'_>) -> Result<Reply, ApiError> {
        let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
        let limit = q.limit();
        let cursor = q.get("cursor").and_then(ImageId::parse);
        let rows = self
            .hosting
            .user_images(&user, cursor.as_ref(), limit + 1)
            .await
            .map_err(unavailable)?;
        let next =
            (rows.len() > limit as usize).then(|| rows[limit as usize - 1].key.id.to_string());
        let images: Vec<_> = rows
            .iter()
            .take(limit as usize)
            .map(|r| self.image_json(r))
            .collect();
        Ok(json_reply(200, json!({"images": images, "next": next})))
    }

    async fn delete_one(&self, user: &str, image: &str) -> Result<Reply, ApiError> {
        let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
        let id = image.split_once('.').map_or(image, |(id, _)| id);
        let id = ImageId::parse(id).ok_or(ApiError::ImageNotFound)?;
        let existed = self
            .hosting
            .delete_image(&ImageKey::new(user, id))
            .await
            .map_err(unavailable)?;
        if !existed {
            return Err(ApiError::ImageNotFound);
        }
        Ok(reply(204, "application/json", Vec::new()))
    }

    async fn delete_user(&self, user: &str) -> Result<Reply, ApiError> {
        let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
        self.hosting.delete_user(&user).await.map_err(unavailable)?;
        Ok(reply(204, "application/json", Vec::new()))
    }

    async fn stats(&self) -> Result<Reply, ApiError> {
        let t = self.hosting.totals().await.map_err(unavailable)?;
        let top: Vec<_> = self
            .hosting
            .top_users(20)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|u| json!({"user_id": u.user.as_str(), "images": u.images, "bytes": u.bytes}))
            .collect();
        Ok(json_reply(
            200,
            json!({
                "images": t.images,
                "bytes": t.bytes,
                "pending": t.pending,
                "failed": t.failed,
                "top_users": top,
                "database": self.hosting.database_name(),
                "store": self.hosting.store_name(),
            }),
        ))
    }

    /// Newest failures first, a page at a time; `cursor` is the `next` of
    /// the previous page.
    async fn failed(&self, q: &Query<'_>) -> Result<Reply, ApiError> {
        let limit = q.limit();
        let cursor = q.get("cursor").and_then(parse_cursor);
        let rows = self
            .hosting
            .failed(cursor.as_ref(), limit + 1)
            .await
            .map_err(unavailable)?;
        let next = (rows.len() > limit as usize).then(|| {
            let r = &rows[limit as usize - 1];
            format!("{}~{}~{}", r.failed_at.unwrap_or(0), r.key.user, r.key.id)
        });
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
        Ok(json_reply(200, json!({"failed": failed, "next": next})))
    }
}

fn unavailable(e: crate::hosting::HostError) -> ApiError {
    ApiError::StorageUnavailable(e.to_string())
}

/// `{failed_at}~{user}~{image}`: a keyset cursor into the failed list.
fn parse_cursor(s: &str) -> Option<Cursor> {
    let mut parts = s.splitn(3, '~');
    let at = parts.next()?.parse().ok()?;
    let user = UserId::parse(parts.next()?)?;
    let id = ImageId::parse(parts.next()?)?;
    Some(Cursor {
        at,
        key: ImageKey::new(user, id),
    })
}

/// Query parameters, parsed without allocation.
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
