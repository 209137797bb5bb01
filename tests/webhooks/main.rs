//! Issue 13: Replicate's webhooks captured on their way to Studio API. A
//! stand-in Replicate signs webhooks with a test `whsec_` secret (its own
//! HMAC code, not the proxy's), sends them through the real binary, and
//! the tests look at what Studio API received and what the proxy serves.
//!
//! One test binary (`cargo test --test webhooks`):
//! - `capture`: capture before any client asks, whose images they are,
//!   duplicates, partial outputs, a crash right after the answer;
//! - `verify`: signatures, timestamps, rejection, the rewritten and re-signed
//!   body, sync-mode responses;
//! - `safe_defaults`: attribution on a trusted word only, retries rewritten.

#[path = "../common/mod.rs"]
mod common;

mod capture;
mod safe_defaults;
mod verify;

use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

pub const HOOK: &str = "/webhooks/replicate";
/// A test secret in Replicate's format (whsec_ + base64 of the key).
pub const SECRET: &str = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IGtleSBmb3IgcGVybWFwcm94eQ==";

/// Stand-in Replicate's own signature: standard base64 of
/// HMAC-SHA256(base64-decoded key, "{id}.{timestamp}.{body}").
pub fn sign(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let tag = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{tag}")
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A webhook delivery as Replicate sends it.
pub struct Delivery {
    pub id: String,
    pub ts: String,
    pub body: String,
    pub signature: String,
}

impl Delivery {
    /// Signed with [`SECRET`], timestamped now.
    pub fn signed(id: &str, body: &Value) -> Delivery {
        let body = body.to_string();
        let ts = now_secs().to_string();
        Delivery {
            signature: sign(SECRET, id, &ts, body.as_bytes()),
            id: id.to_string(),
            ts,
            body,
        }
    }
}

/// POSTs a delivery to `path` (query included) through the proxy.
pub async fn deliver(p: &Proxy, path: &str, d: &Delivery) -> Reply {
    fetch(
        client()
            .post(p.url(path))
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", &d.ts)
            .header("webhook-signature", &d.signature)
            .body(d.body.clone()),
    )
    .await
}

/// A prediction as Replicate's webhook body carries it.
pub fn prediction(id: &str, status: &str, output: Value) -> Value {
    json!({
        "id": id,
        "model": "black-forest-labs/flux-schnell",
        "version": "abc",
        "input": {"prompt": "a lighthouse, \"quoted\" and ünïcode"},
        "logs": "step 1/4\nstep 2/4",
        "output": output,
        "status": status,
        "error": null,
        "created_at": "2026-12-01T00:00:00.000Z",
        "urls": {"get": format!("https://api.replicate.com/v1/predictions/{id}")}
    })
}

/// The usual cast, with webhook capture on at [`HOOK`]; Studio API answers
/// the webhook with 200 and `/v1/predictions/*` polls as set by each test.
pub async fn stands(extra: &[(&str, &str)]) -> Stands {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    api.set_response(HOOK, Canned::json(&json!({"ok": true})));
    let opts = ProxyOptions::for_stands(&api, &host)
        .env("IMAGE_WEBHOOK_PATHS", &format!("{HOOK}*"))
        .env(
            "IMAGE_REWRITE_PATHS",
            "/v1/images/generate,/v1/predictions/*",
        )
        .env("REPLICATE_WEBHOOK_SECRET", SECRET)
        .env("IMAGE_WEBHOOK_USER_PARAM", "userId")
        // Studio API's word first: only a trusted id attributes a
        // prediction's webhook; a client's claim still names the folder.
        .env(
            "IMAGE_USER_ID_FROM",
            "response-header:x-studio-user,request-header:x-user-id,anonymous",
        )
        .overrides(extra);
    Stands {
        host,
        api,
        proxy: Proxy::start(opts).await,
    }
}

/// What Studio API received on the webhook route, last delivery first.
pub fn received_hooks(api: &StudioApi) -> Vec<RecordedRequest> {
    let mut v: Vec<RecordedRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(HOOK))
        .collect();
    v.reverse();
    v
}

/// Has the proxy stored `source` for `user` (its row says stored)?
pub async fn stored(p: &Proxy, user: &str, source: &str) -> bool {
    let db = p.db().await;
    let row = db.row(user, &expected_image_id(source)).await;
    db.close().await;
    row.is_some_and(|r| r.0 == "stored")
}

/// A poll of Studio API for `id` through the proxy (a rewrite route), as
/// `user` (signed in to Studio API); returns the JSON.
pub async fn poll(s: &Stands, id: &str, user: &str, answer: &Value) -> Value {
    let path = format!("/v1/predictions/{id}");
    s.api.set_response(&path, Canned::json(answer));
    let r = fetch(
        client()
            .get(s.proxy.url(&path))
            .header("x-user-id", user)
            .header("authorization", session(user)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub async fn get_path(p: &Proxy, path: &str) -> Reply {
    fetch(client().get(p.url(path))).await
}
