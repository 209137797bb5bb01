//! A stand-in for Studio API (the Express service behind the proxy).
//!
//! Routes:
//! - `POST /v1/images/generate` (and any path given to `set_response` /
//!   `set_handler`): a canned answer set by the test; default `200 {}`.
//! - `ANY /echo...`: status from `?status=NNN` (default 200); headers
//!   `x-echo-method`, `x-echo-path` (path+query as received) and
//!   `x-echo-h-<name>` for every request header; body = request body.
//! - `GET /big?bytes=N`: `big_bytes(N, 0)`.
//! - `GET /slow?ms=N`: waits N ms, then `slow done`.
//! - anything else: `404 no route` (text/plain).
//!
//! Every request is recorded (method, path+query, headers, body).
//!
//! Like the real Studio API it authenticates its callers: a request with
//! `Authorization: Bearer session-NAME` is NAME's, and every routed answer
//! to it names NAME in [`USER_HEADER`], the header permaproxy trusts with
//! `IMAGE_USER_ID_FROM=response-header:x-studio-user` ([`TRUSTED_IDS`]).

use super::server::{self, full, text_response, Body, Running};
use super::util::{big_bytes, find_header, gzip};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const GENERATE_PATH: &str = "/v1/images/generate";

/// The response header naming the caller Studio API authenticated.
pub const USER_HEADER: &str = "x-studio-user";

/// The proxy setting that trusts [`USER_HEADER`] alone.
pub const TRUSTED_IDS: (&str, &str) = ("IMAGE_USER_ID_FROM", "response-header:x-studio-user");

/// The `Authorization` value of `user`'s session with the stand-in.
pub fn session(user: &str) -> String {
    format!("Bearer session-{user}")
}

/// A request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    /// Lowercased names, in order, repeated names kept.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Option<Duration>,
}

impl Canned {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Canned {
        let mut headers = Vec::new();
        if !content_type.is_empty() {
            headers.push(("content-type".to_string(), content_type.to_string()));
        }
        Canned {
            status,
            headers,
            body: body.into(),
            delay: None,
        }
    }

    /// `200 application/json` with `value` serialised as is.
    pub fn json(value: &serde_json::Value) -> Canned {
        Canned::new(200, "application/json", value.to_string())
    }

    /// `200 application/json` with the exact text `raw` (to control member order).
    pub fn json_text(raw: &str) -> Canned {
        Canned::new(200, "application/json", raw.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Canned {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Gzips the body and sets `Content-Encoding: gzip` (always, whatever the
    /// request's Accept-Encoding, like an upstream serving precompressed bodies).
    pub fn gzip(mut self) -> Canned {
        self.body = Bytes::from(gzip(&self.body));
        self.headers
            .push(("content-encoding".to_string(), "gzip".to_string()));
        self
    }

    /// Waits `d` before answering.
    pub fn delay(mut self, d: Duration) -> Canned {
        self.delay = Some(d);
        self
    }
}

type Route = Arc<dyn Fn(&RecordedRequest) -> Canned + Send + Sync>;

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    requests: Vec<RecordedRequest>,
    counts: HashMap<String, usize>,
}

pub struct StudioApi {
    state: Arc<Mutex<State>>,
    running: Running,
}

fn query_param<'a>(pq: &'a str, name: &str) -> Option<&'a str> {
    let q = pq.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl StudioApi {
    pub async fn start() -> StudioApi {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts on a given address, e.g. a port the proxy already points at.
    pub async fn start_on(addr: &str) -> StudioApi {
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let handler: server::Handler = Arc::new(move |req| handle(st.clone(), req).boxed());
        let running = server::spawn(addr, handler).await;
        let api = StudioApi { state, running };
        api.set_generate_json(&serde_json::json!({}));
        api
    }

    /// `http://127.0.0.1:PORT` (what tests put in UPSTREAM_URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    pub fn addr(&self) -> String {
        self.running.addr.to_string()
    }

    /// The answer to `POST /v1/images/generate`.
    pub fn set_generate_response(&self, status: u16, content_type: &str, body: impl Into<Bytes>) {
        self.set_response(GENERATE_PATH, Canned::new(status, content_type, body));
    }

    /// `200 application/json` with `value` for `/v1/images/generate`.
    pub fn set_generate_json(&self, value: &serde_json::Value) {
        self.set_response(GENERATE_PATH, Canned::json(value));
    }

    /// A fixed answer for requests to `path` (query ignored), any method.
    pub fn set_response(&self, path: &str, canned: Canned) {
        self.set_handler(path, move |_| canned.clone());
    }

    /// An answer computed from each request to `path` (query ignored).
    pub fn set_handler(
        &self,
        path: &str,
        f: impl Fn(&RecordedRequest) -> Canned + Send + Sync + 'static,
    ) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), Arc::new(f));
    }

    /// The last request received on any path.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state.lock().unwrap().requests.last().cloned()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests received for `path` (query ignored).
    pub fn count(&self, path: &str) -> usize {
        *self.state.lock().unwrap().counts.get(path).unwrap_or(&0)
    }

    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text_response(400, &format!("body error: {e}")),
    };
    let path = parts.uri.path().to_string();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());
    let rec = RecordedRequest {
        method: parts.method.to_string(),
        path: pq.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect(),
        body,
    };
    let route = {
        let mut st = state.lock().unwrap();
        st.requests.push(rec.clone());
        *st.counts.entry(path.clone()).or_insert(0) += 1;
        st.routes.get(&path).cloned()
    };
    if let Some(route) = route {
        let canned = route(&rec);
        if let Some(d) = canned.delay {
            tokio::time::sleep(d).await;
        }
        let mut b = Response::builder().status(canned.status);
        for (k, v) in &canned.headers {
            b = b.header(k, v);
        }
        let caller = rec
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer session-"));
        if let Some(user) = caller {
            b = b.header(USER_HEADER, user);
        }
        return b.body(full(canned.body)).expect("response");
    }
    if path.starts_with("/echo") {
        let status: u16 = query_param(&pq, "status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let mut b = Response::builder()
            .status(status)
            .header("x-echo-method", parts.method.as_str())
            .header("x-echo-path", pq.as_str())
            .header(
                "content-type",
                parts
                    .headers
                    .get("content-type")
                    .cloned()
                    .unwrap_or_else(|| {
                        hyper::header::HeaderValue::from_static("application/octet-stream")
                    }),
            );
        for (k, v) in parts.headers.iter() {
            b = b.header(format!("x-echo-h-{}", k.as_str()), v.clone());
        }
        return b.body(full(rec.body)).expect("response");
    }
    if path == "/big" {
        let n: usize = query_param(&pq, "bytes")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .body(full(big_bytes(n, 0)))
            .expect("response");
    }
    if path == "/slow" {
        let ms: u64 = query_param(&pq, "ms")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text_response(200, "slow done");
    }
    text_response(404, "no route")
}
