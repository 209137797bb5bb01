//! Requests permaproxy forwards itself instead of through Pingora's proxy
//! path: rewrite routes, whose answer must wait for downloads (Pingora's
//! body filters are synchronous), and chunked request bodies, whose framing
//! must be checked before anything reaches the upstream.
//!
//! Request bodies up to [`BODY_BUFFER_LIMIT`] are read whole first, so a
//! broken body gets a 400 and the upstream sees nothing; larger ones stream.
//! The response is buffered (up to IMAGE_REWRITE_MAX_BODY_BYTES) only when
//! it is eligible for rewriting; everything else streams down untouched.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::headers::{has_body, is_json, strip_hop_by_hop, upstream_request_headers};
use super::App;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics;

/// Request-body bytes kept to read a user id from; bodies of generate calls
/// are small, uploads are not parsed.
const BODY_CAPTURE_LIMIT: usize = 64 * 1024;

/// Request bodies up to this size are read and their framing checked before
/// the upstream call starts (nginx's request buffering, in memory).
const BODY_BUFFER_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A rewrite route: JSON answers may be rewritten.
    Rewrite,
    /// A pass-through route forwarded here only for its request framing.
    Plain,
    /// A webhook route: the request body is captured (and maybe rewritten)
    /// on its way up; the answer goes down untouched.
    Webhook,
}

pub struct Forwarder {
    client: reqwest::Client,
    base: String,
}

impl Forwarder {
    pub fn new(cfg: &Config) -> Result<Forwarder, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(cfg.upstream_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .no_proxy()
            .build()?;
        let up = &cfg.upstream;
        Ok(Forwarder {
            client,
            base: format!("{}://{}", up.url.scheme(), up.authority),
        })
    }
}

/// The start of a request body: all of it when `complete`.
struct BodyHead {
    bytes: Bytes,
    complete: bool,
}

/// A body the client framed badly is the client's error (400), and a client
/// too slow to send it gets 408, as nginx answers both.
fn body_error(e: &pingora::Error) -> ApiError {
    match e.etype() {
        pingora::ErrorType::ReadTimedout => ApiError::RequestTimeout,
        _ => ApiError::BadRequest("malformed request body"),
    }
}

async fn read_body_head(session: &mut Session, limit: usize) -> Result<BodyHead, ApiError> {
    let mut buf = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > limit {
                    return Ok(BodyHead {
                        bytes: buf.freeze(),
                        complete: false,
                    });
                }
            }
            Ok(None) => {
                return Ok(BodyHead {
                    bytes: buf.freeze(),
                    complete: true,
                })
            }
            Err(e) => return Err(body_error(&e)),
        }
    }
}

pub async fn exchange(
    app: &App,
    session: &mut Session,
    request_id: &str,
    mode: Mode,
) -> Result<(), ApiError> {
    let req = session.req_header().clone();
    let url = format!(
        "{}{}",
        app.forwarder.base,
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let headers = upstream_request_headers(&req.headers, client_ip, mode == Mode::Rewrite);
    let builder = app
        .forwarder
        .client
        .request(req.method.clone(), &url)
        .headers(headers);
    let (resp, captured) = if has_body(&req.headers) {
        let head = read_body_head(session, BODY_BUFFER_LIMIT).await?;
        let captured = head.bytes.slice(..head.bytes.len().min(BODY_CAPTURE_LIMIT));
        let resp = if head.complete {
            let mut builder = builder;
            let mut body = head.bytes;
            if mode == Mode::Webhook {
                let fwd =
                    super::webhooks::process(app, &req.uri, &req.headers, body, request_id).await?;
                if let Some(sig) = fwd.signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
                    // `headers` replaces the client's value; `header` would
                    // send both.
                    let mut replace = HeaderMap::new();
                    replace.insert("webhook-signature", sig);
                    builder = builder.headers(replace);
                }
                body = fwd.body;
            }
            builder.body(body).send().await
        } else {
            send_streaming(builder, session, head.bytes).await?
        };
        (resp, captured)
    } else {
        (builder.send().await, Bytes::new())
    };
    let resp = resp.map_err(|e| {
        metrics::get().upstream_errors.inc();
        tracing::warn!(request_id, error = %e, "upstream call failed on a forwarded route");
        if e.is_timeout() {
            ApiError::UpstreamTimeout
        } else {
            ApiError::UpstreamUnreachable("connection failed".into())
        }
    })?;
    match mode {
        Mode::Rewrite => {
            let r = Exchange {
                path: req.uri.path(),
                req_headers: &req.headers,
                req_body: &captured,
                request_id,
            };
            respond(app, session, &r, resp).await
        }
        Mode::Plain | Mode::Webhook => {
            let status = resp.status().as_u16();
            let mut headers = resp.headers().clone();
            strip_hop_by_hop(&mut headers);
            stream_through(app, session, status, headers, resp, Bytes::new()).await
        }
    }
    Ok(())
}

/// Sends a body larger than the buffer: what was read, then the rest as the
/// client sends it. A client whose framing breaks mid-way gets its 400; the
/// upstream request is aborted, never completed with a broken body.
async fn send_streaming(
    builder: reqwest::RequestBuilder,
    session: &mut Session,
    head: Bytes,
) -> Result<reqwest::Result<reqwest::Response>, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let builder = builder.body(reqwest::Body::wrap_stream(stream));
    let mut client_error = None;
    let pump = async {
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    client_error = Some(body_error(&e));
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
    };
    let (sent, ()) = tokio::join!(builder.send(), pump);
    match client_error {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

/// The request a rewrite-route answer belongs to.
pub struct Exchange<'a> {
    pub path: &'a str,
    pub req_headers: &'a HeaderMap,
    pub req_body: &'a [u8],
    pub request_id: &'a str,
}

async fn respond(app: &App, session: &mut Session, x: &Exchange<'_>, mut resp: reqwest::Response) {
    let request_id = x.request_id;
    let status = resp.status();
    let mut headers = resp.headers().clone();
    strip_hop_by_hop(&mut headers);
    let eligible = status.is_success()
        && is_json(&headers)
        && resp
            .content_length()
            .is_none_or(|n| n <= app.cfg.rewrite.max_body as u64);
    if !eligible {
        stream_through(app, session, status.as_u16(), headers, resp, Bytes::new()).await;
        return;
    }
    let (buffered, overflow) = match read_capped(&mut resp, app.cfg.rewrite.max_body).await {
        Ok(r) => r,
        Err(e) => {
            // Nothing has been sent yet, so the client can still be told.
            metrics::get().upstream_errors.inc();
            tracing::warn!(request_id, error = %e, "upstream body broke on a rewrite route");
            let e = ApiError::UpstreamUnreachable("the upstream response broke off".into());
            super::respond::error(session, &e).await;
            return;
        }
    };
    if overflow {
        stream_through(app, session, status.as_u16(), headers, resp, buffered).await;
        return;
    }
    let body = super::rewriting::guarded_rewrite(app, x, &headers, &buffered).await;
    let body = match body {
        Some(new_body) => {
            headers.remove("content-encoding");
            headers.remove("etag");
            headers.remove("content-md5");
            Bytes::from(new_body)
        }
        None => buffered,
    };
    headers.insert("content-length", HeaderValue::from(body.len()));
    write_whole(app, session, status.as_u16(), &headers, body).await;
}

/// Reads up to `max` bytes; `true` means more is coming.
async fn read_capped(
    resp: &mut reqwest::Response,
    max: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            return Ok((buf.freeze(), true));
        }
    }
    Ok((buf.freeze(), false))
}

fn response_header(status: u16, headers: &HeaderMap) -> Option<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 1)).ok()?;
    for (name, value) in headers {
        resp.append_header(name.clone(), value.clone()).ok()?;
    }
    Some(resp)
}

async fn write_whole(
    app: &App,
    session: &mut Session,
    status: u16,
    headers: &HeaderMap,
    body: Bytes,
) {
    let mut headers = headers.clone();
    strip_private(app, &mut headers);
    let Some(resp) = response_header(status, &headers) else {
        return;
    };
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    if session
        .write_response_header(Box::new(resp), head_only)
        .await
        .is_ok()
        && !head_only
    {
        let _ = session.write_response_body(Some(body), true).await;
    }
}

fn strip_private(app: &App, headers: &mut HeaderMap) {
    for h in app.cfg.user_id.private_response_headers() {
        headers.remove(h);
    }
}

/// Sends the response as the upstream sent it: `prefix` (already read)
/// first, then the rest of the stream.
async fn stream_through(
    app: &App,
    session: &mut Session,
    status: u16,
    mut headers: HeaderMap,
    mut resp: reqwest::Response,
    prefix: Bytes,
) {
    strip_private(app, &mut headers);
    let no_body =
        session.req_header().method == http::Method::HEAD || status == 204 || status == 304;
    if !headers.contains_key("content-length") && !no_body {
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    }
    let Some(header) = response_header(status, &headers) else {
        return;
    };
    if session
        .write_response_header(Box::new(header), no_body)
        .await
        .is_err()
        || no_body
    {
        return;
    }
    if !prefix.is_empty()
        && session
            .write_response_body(Some(prefix), false)
            .await
            .is_err()
    {
        return;
    }
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "upstream body broke mid-stream");
                return;
            }
        }
    }
    let _ = session.write_response_body(None, true).await;
}
