//! A stand-in CDN purge API that checks requests as each provider's
//! published documentation describes them, and can fail on demand:
//!
//! - Cloudflare: `POST /client/v4/zones/{zone_id}/purge_cache`,
//!   `Authorization: Bearer {token}`, `{"tags": [...]}` with at most 100
//!   tags; answers `{"success": true, "errors": [], "messages": [],
//!   "result": {"id": ...}}`, or 403 with an error for a wrong token.
//! - Fastly: `POST /service/{service_id}/purge`, `Fastly-Key`,
//!   `{"surrogate_keys": [...]}` with at most 256 keys, optional
//!   `Fastly-Soft-Purge: 1`; answers `{key: purge id, ...}`.
//! - Bunny: `POST /pullzone/{id}/purgeCache`, `AccessKey`,
//!   `{"CacheTag": "..."}`; answers 204.
//! - Anything else: a plain webhook receiver (200).
//!
//! A request that breaks the documented shape gets 400 and is recorded as
//! refused, so a test sees it.

use super::server::{self, full, text_response, Body, Running};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub const ZONE: &str = "zone-0123";
pub const SERVICE: &str = "svc-4567";
pub const PULLZONE: &str = "89";
pub const TOKEN: &str = "cdn-test-token";

/// One purge request as received.
#[derive(Debug, Clone)]
pub struct PurgeCall {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// The documented shape was kept (else the answer was 400 or 403).
    pub accepted: bool,
    /// The status the stand-in answered.
    pub status: u16,
}

impl PurgeCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The tags this call purged, whatever the provider.
    pub fn tags(&self) -> Vec<String> {
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(t) = self.body.get("CacheTag").and_then(|t| t.as_str()) {
            return t.split(',').map(str::to_string).collect();
        }
        let mut out = list(&self.body["tags"]);
        out.extend(list(&self.body["surrogate_keys"]));
        out
    }
}

#[derive(Default)]
struct State {
    calls: Vec<PurgeCall>,
    /// Answers to give before the normal one: (status, Retry-After).
    faults: VecDeque<(u16, Option<String>)>,
    /// Answer every call with this status (an outage), when set.
    down: Option<u16>,
}

pub struct CdnApi {
    state: Arc<Mutex<State>>,
    running: Running,
}

impl CdnApi {
    pub async fn start() -> CdnApi {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let handler: server::Handler = Arc::new(move |req| handle(st.clone(), req).boxed());
        let running = server::spawn("127.0.0.1:0", handler).await;
        CdnApi { state, running }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// The next calls get these answers first, in order.
    pub fn fail_next(&self, status: u16, retry_after: Option<&str>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((status, retry_after.map(str::to_string)));
    }

    /// Every call fails with `status` until [`CdnApi::up`].
    pub fn down(&self, status: u16) {
        self.state.lock().unwrap().down = Some(status);
    }

    pub fn up(&self) {
        self.state.lock().unwrap().down = None;
    }

    pub fn calls(&self) -> Vec<PurgeCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Every tag purged by an accepted call, in order.
    pub fn purged_tags(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| c.accepted && c.status < 300)
            .flat_map(|c| c.tags())
            .collect()
    }
}

/// Checks the documented shape: `Err(status, body)` when it is broken.
fn check(
    path: &str,
    headers: &[(String, String)],
    body: &serde_json::Value,
) -> Result<(), (u16, String)> {
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let bad = |m: &str| Err((400, m.to_string()));
    if path == format!("/client/v4/zones/{ZONE}/purge_cache") {
        if h("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Err((
                403,
                r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#
                    .into(),
            ));
        }
        return match body["tags"].as_array() {
            Some(t) if !t.is_empty() && t.len() <= 100 => Ok(()),
            _ => bad("tags: 1 to 100"),
        };
    }
    if path == format!("/service/{SERVICE}/purge") {
        if h("fastly-key") != Some(TOKEN) {
            return Err((
                401,
                r#"{"msg":"Provided credentials are missing or invalid"}"#.into(),
            ));
        }
        return match body["surrogate_keys"].as_array() {
            Some(k) if !k.is_empty() && k.len() <= 256 => Ok(()),
            _ => bad("surrogate_keys: 1 to 256"),
        };
    }
    if path == format!("/pullzone/{PULLZONE}/purgeCache") {
        if h("accesskey") != Some(TOKEN) {
            return Err((401, "unauthorized".into()));
        }
        return match body["CacheTag"].as_str() {
            Some(t) if !t.is_empty() => Ok(()),
            _ => bad("CacheTag"),
        };
    }
    Ok(())
}

fn answer(path: &str, body: &serde_json::Value) -> Response<Body> {
    let json = |v: serde_json::Value| {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(full(v.to_string()))
            .expect("response")
    };
    if path.starts_with("/client/v4/") {
        return json(
            serde_json::json!({"success": true, "errors": [], "messages": [], "result": {"id": ZONE}}),
        );
    }
    if path.starts_with("/service/") {
        let ids: serde_json::Map<String, serde_json::Value> = body["surrogate_keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .map(|k| (k.to_string(), serde_json::json!(format!("purge-{k}"))))
            .collect();
        return json(serde_json::Value::Object(ids));
    }
    if path.starts_with("/pullzone/") {
        return Response::builder()
            .status(204)
            .body(full(Bytes::new()))
            .expect("response");
    }
    text_response(200, "ok")
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let checked = if parts.method == hyper::Method::POST {
        check(&path, &headers, &json)
    } else {
        Err((405, "POST only".into()))
    };
    let mut st = state.lock().unwrap();
    let fault = st.down.map(|s| (s, None)).or_else(|| st.faults.pop_front());
    let resp = match (&checked, fault) {
        (Err((status, msg)), _) => text_response(*status, msg),
        (Ok(()), Some((status, retry_after))) => {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", "text/plain");
            if let Some(ra) = retry_after {
                b = b.header("retry-after", ra);
            }
            b.body(full("try later")).expect("response")
        }
        (Ok(()), None) => answer(&path, &json),
    };
    st.calls.push(PurgeCall {
        path,
        headers,
        body: json,
        accepted: checked.is_ok(),
        status: resp.status().as_u16(),
    });
    resp
}
