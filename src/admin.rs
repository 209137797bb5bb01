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

use crate::config::Config;
use crate::error::ApiError;
use crate::hosting::{rfc3339, Hosting};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::index::Row;
use crate::metrics;

const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

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
                self.refresh_gauges();
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

    fn refresh_gauges(&self) {
        if let Some(free) = self.hosting.store.free_bytes() {
            metrics::get().storage_free_bytes.set(free as i64);
        }
    }

    async fn readyz(&self) -> Reply {
        let storage = self.hosting.store.probe().await;
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
                "storage": storage.err().map_or("ok".to_string(), |e| e.to_string()),
                "upstream": if upstream_ok { "ok" } else { "unreachable" },
            }),
        )
    }

    async fn admin(&self, method: Method, path: &str, query: &str) -> Result<Reply, ApiError> {
        let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
        match (method, parts.as_slice()) {
            (Method::GET, ["stats"]) => Ok(self.stats()),
            (Method::GET, ["failed"]) => Ok(self.failed()),
            (Method::POST, ["cleanup"]) => {
                let dry_run = query
                    .split('&')
                    .any(|p| p == "dry_run=true" || p == "dry_run=1");
                let deleted = crate::lifecycle::cleanup(&self.hosting, dry_run).await;
                Ok(json_reply(
                    200,
                    json!({"dry_run": dry_run, "deleted": deleted}),
                ))
            }
            (Method::GET, ["users", user, "images"]) => self.list(user, query),
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

    fn image_json(&self, row: &Row) -> serde_json::Value {
        let m = &row.meta;
        let base = self.cfg.public_base_url.clone().unwrap_or_default();
        let expires = row.accessed_ms + self.cfg.max_age.as_millis() as u64;
        json!({
            "id": m.id,
            "user_id": m.user_id,
            "url": format!("{base}{}", row.key.hosted_path(m.format)),
            "file_path": m.relative_path(),
            "size_bytes": m.size,
            "content_type": m.content_type,
            "sha256": m.sha256,
            "source_url": m.source_url,
            "replicate_prediction_id": m.prediction_id,
            "created_at": rfc3339(m.created_at),
            "accessed_at": rfc3339(row.accessed_ms),
            "expires_at": rfc3339(expires),
        })
    }

    fn list(&self, user: &str, query: &str) -> Result<Reply, ApiError> {
        let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let limit = param("limit")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(PAGE_DEFAULT)
            .clamp(1, PAGE_MAX);
        let cursor = param("cursor").unwrap_or("");
        let mut rows = self.hosting.index.user_rows(&user);
        rows.sort_by(|a, b| a.key.id.cmp(&b.key.id));
        let page: Vec<&Row> = rows
            .iter()
            .filter(|r| r.key.id.as_str() > cursor)
            .take(limit + 1)
            .collect();
        let next = (page.len() > limit).then(|| page[limit - 1].key.id.to_string());
        let images: Vec<_> = page
            .iter()
            .take(limit)
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
            .delete(&ImageKey::new(user, id))
            .await
            .map_err(|e| ApiError::StorageUnavailable(e.to_string()))?;
        if !existed {
            return Err(ApiError::ImageNotFound);
        }
        Ok(reply(204, "application/json", Vec::new()))
    }

    async fn delete_user(&self, user: &str) -> Result<Reply, ApiError> {
        let user = UserId::parse(user).ok_or(ApiError::BadPath("malformed user id"))?;
        for row in self.hosting.index.user_rows(&user) {
            self.hosting
                .delete(&row.key)
                .await
                .map_err(|e| ApiError::StorageUnavailable(e.to_string()))?;
        }
        for p in self.hosting.journal.all_pending().into_iter().chain(
            self.hosting
                .journal
                .all_failed()
                .into_iter()
                .map(|f| f.pending),
        ) {
            if let Some(key) = p.key().filter(|k| k.user == user) {
                self.hosting.journal.forget(&key);
            }
        }
        Ok(reply(204, "application/json", Vec::new()))
    }

    fn stats(&self) -> Reply {
        let rows = self.hosting.index.rows();
        let mut per_user: std::collections::HashMap<&str, (u64, u64)> = Default::default();
        for r in &rows {
            let e = per_user.entry(r.key.user.as_str()).or_default();
            e.0 += 1;
            e.1 += r.meta.size;
        }
        let mut top: Vec<_> = per_user.into_iter().collect();
        top.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
        let top: Vec<_> = top
            .into_iter()
            .take(20)
            .map(|(u, (n, b))| json!({"user_id": u, "images": n, "bytes": b}))
            .collect();
        let (images, bytes) = self.hosting.index.totals();
        json_reply(
            200,
            json!({
                "images": images,
                "bytes": bytes,
                "pending": self.hosting.journal.pending_count(),
                "failed": self.hosting.journal.all_failed().len(),
                "top_users": top,
            }),
        )
    }

    fn failed(&self) -> Reply {
        let failed: Vec<_> = self
            .hosting
            .journal
            .all_failed()
            .into_iter()
            .map(|f| json!({"user_id": f.pending.user, "id": f.pending.id, "source": f.pending.source, "reason": f.reason, "failed_at": rfc3339(f.at)}))
            .collect();
        json_reply(200, json!({"failed": failed}))
    }
}
