//! Rewrite routes. Pingora's body filters are synchronous, and a rewrite has
//! to await downloads before it answers, so these routes make their own
//! upstream call: the request body streams up, the response is buffered (up
//! to IMAGE_REWRITE_MAX_BODY_BYTES) only when it is eligible for rewriting,
//! and everything else streams down untouched.

use std::io::Read;
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics;
use crate::proxy::App;
use crate::rewrite;
use crate::userid::Facts;

/// Request-body bytes kept to read a user id from; bodies of generate calls
/// are small, uploads are not parsed.
const BODY_CAPTURE_LIMIT: usize = 64 * 1024;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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

/// X-Forwarded-For gains the client address; Proto and Host are set when
/// an edge in front has not set them already.
pub fn forwarded_headers(
    xff: Option<&HeaderValue>,
    host: Option<&HeaderValue>,
    client: Option<IpAddr>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(ip) = client {
        let value = match xff.and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        out.push(("x-forwarded-for", value));
    }
    if let Some(h) = host.and_then(|v| v.to_str().ok()) {
        out.push(("x-forwarded-host", h.to_string()));
    }
    out
}

pub async fn exchange(app: &App, session: &mut Session) -> Result<(), ApiError> {
    let req = session.req_header().clone();
    let url = format!(
        "{}{}",
        app.forwarder.base,
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers.iter() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != "host" && name != "accept-encoding" {
            headers.append(name.clone(), value.clone());
        }
    }
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    for (name, value) in forwarded_headers(
        req.headers.get("x-forwarded-for"),
        req.headers.get("host"),
        client_ip,
    ) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    if !req.headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    // Ask for an identity body so the JSON can be read; bodies that come
    // encoded anyway are decoded below.
    headers.insert("accept-encoding", HeaderValue::from_static("identity"));
    let has_body = req.headers.contains_key("transfer-encoding")
        || req
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let mut builder = app
        .forwarder
        .client
        .request(req.method.clone(), &url)
        .headers(headers);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    if has_body {
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        builder = builder.body(reqwest::Body::wrap_stream(stream));
    }
    let mut captured = BytesMut::new();
    let pump = async {
        if !has_body {
            return;
        }
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if captured.len() < BODY_CAPTURE_LIMIT {
                        let take = chunk.len().min(BODY_CAPTURE_LIMIT - captured.len());
                        captured.extend_from_slice(&chunk[..take]);
                    }
                    if tx.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    break;
                }
            }
        }
    };
    let (sent, ()) = tokio::join!(builder.send(), pump);
    let resp = sent.map_err(|e| {
        metrics::get().upstream_errors.inc();
        tracing::warn!(error = %e, "upstream call failed on a rewrite route");
        if e.is_timeout() {
            ApiError::UpstreamTimeout
        } else {
            ApiError::UpstreamUnreachable("connection failed".into())
        }
    })?;
    respond(app, session, &req.headers, &captured, resp).await;
    Ok(())
}

async fn respond(
    app: &App,
    session: &mut Session,
    req_headers: &HeaderMap,
    req_body: &[u8],
    mut resp: reqwest::Response,
) {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let eligible = status.is_success()
        && is_json(&headers)
        && resp
            .content_length()
            .is_none_or(|n| n <= app.cfg.rewrite_max_body as u64);
    if !eligible {
        stream_through(app, session, status.as_u16(), headers, resp, Bytes::new()).await;
        return;
    }
    let (buffered, overflow) = match read_capped(&mut resp, app.cfg.rewrite_max_body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "upstream body broke on a rewrite route");
            return;
        }
    };
    if overflow {
        stream_through(app, session, status.as_u16(), headers, resp, buffered).await;
        return;
    }
    let body = rewrite_body(app, req_headers, req_body, &headers, &buffered).await;
    match body {
        Some(new_body) => {
            headers.remove("content-encoding");
            headers.remove("etag");
            headers.remove("content-md5");
            headers.insert("content-length", HeaderValue::from(new_body.len()));
            write_whole(
                app,
                session,
                status.as_u16(),
                &headers,
                Bytes::from(new_body),
            )
            .await;
        }
        None => {
            headers.insert("content-length", HeaderValue::from(buffered.len()));
            write_whole(app, session, status.as_u16(), &headers, buffered).await;
        }
    }
}

/// The rewritten body, or `None` to send the upstream's bytes unchanged.
async fn rewrite_body(
    app: &App,
    req_headers: &HeaderMap,
    req_body: &[u8],
    resp_headers: &HeaderMap,
    raw: &Bytes,
) -> Option<Vec<u8>> {
    let encoding = resp_headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    let decoded = match encoding.as_deref() {
        None | Some("") | Some("identity") => raw.to_vec(),
        Some(enc) => decode(enc, raw, app.cfg.rewrite_max_body)?,
    };
    if !rewrite::may_contain_sources(&decoded, app.cfg.sources.needles()) {
        return None;
    }
    let scan = rewrite::scan(&decoded, &app.cfg.sources).ok()?;
    if scan.found.is_empty() {
        return None;
    }
    let body_json: Option<serde_json::Map<String, serde_json::Value>> =
        if app.cfg.user_id.needs_request_body() {
            serde_json::from_slice(req_body).ok()
        } else {
            None
        };
    let facts = Facts {
        request_headers: req_headers,
        request_body: body_json.as_ref(),
        response_headers: resp_headers,
    };
    let Some(user) = app.cfg.user_id.resolve(&facts) else {
        metrics::get().user_id_missing.inc();
        metrics::get()
            .rewritten_urls
            .with_label_values(&["kept"])
            .inc_by(scan.found.len() as u64);
        tracing::warn!("no trusted user id for this response: original URLs kept");
        return (encoding.is_some()).then_some(decoded);
    };
    let sources = scan
        .found
        .iter()
        .map(|f| (f.value.clone(), f.source.clone()))
        .collect();
    let base = public_base(&app.cfg, req_headers);
    let replacements = app
        .hosting
        .host_for_response(&user, sources, scan.prediction_id.clone(), &base)
        .await;
    let kept = scan
        .found
        .iter()
        .filter(|f| !replacements.contains_key(&f.value))
        .count();
    metrics::get()
        .rewritten_urls
        .with_label_values(&["kept"])
        .inc_by(kept as u64);
    Some(rewrite::apply(&decoded, &scan, &replacements))
}

/// Decodes a compressed body, refusing anything that inflates past `max`
/// (a decompression bomb is just a body that stays untouched).
fn decode(encoding: &str, raw: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let limit = max as u64 + 1;
    let read = match encoding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => {
            // "deflate" is zlib-wrapped per the RFC, raw in some servers.
            let r = flate2::read::ZlibDecoder::new(raw)
                .take(limit)
                .read_to_end(&mut out);
            if r.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(raw)
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                r
            }
        }
        "br" => brotli::Decompressor::new(raw, 8192)
            .take(limit)
            .read_to_end(&mut out),
        _ => return None,
    };
    (read.is_ok() && out.len() <= max).then_some(out)
}

/// `PUBLIC_BASE_URL`, or the scheme and host this request came in on.
pub fn public_base(cfg: &Config, headers: &HeaderMap) -> String {
    if let Some(base) = &cfg.public_base_url {
        return base.clone();
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{proto}://{host}")
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decodes_within_limit_only() {
        let json = br#"{"output":["https://replicate.delivery/a.png"]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode("gzip", &gz, 1000).unwrap(), json);
        assert!(
            decode("gzip", &gz, 10).is_none(),
            "inflating past the cap is refused"
        );
        assert!(decode("zstd", &gz, 1000).is_none());
        let bomb = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&vec![b' '; 50 << 20]).unwrap();
            e.finish().unwrap()
        };
        assert!(decode("gzip", &bomb, 8 << 20).is_none());
    }

    #[test]
    fn base_url_from_request() {
        let cfg = Config::load_from(None, &[]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("api.example.com"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(public_base(&cfg, &h), "https://api.example.com");
        h.insert("host", HeaderValue::from_static("evil.com/<script>"));
        assert_eq!(public_base(&cfg, &h), "https://localhost");
    }
}
