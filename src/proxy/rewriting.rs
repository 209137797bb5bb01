//! The rewrite of one JSON response on a rewrite route: decode, find the
//! sources, resolve whose they are, host them, and swap in hosted URLs.
//! Whatever goes wrong in here, even a panic, the caller sends the
//! upstream's bytes unchanged.

use std::io::Read;

use bytes::Bytes;
use http::HeaderMap;

use super::forward::Exchange;
use super::headers::public_base;
use super::App;
use crate::metrics;
use crate::rewrite;
use crate::userid::Facts;

/// Why a rewrite gave up. Whatever the reason, the client gets the
/// upstream's response exactly as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RewriteFailure {
    /// A compressed body that could not be decoded within the size limit.
    Decode,
    /// A body that holds a source host but is not JSON.
    NotJson,
    /// A bug: the rewrite panicked.
    Panic,
    /// Injected by a test (`PERMAPROXY_TEST_FAULTS=rewrite_error`).
    Injected,
}

impl RewriteFailure {
    fn as_str(self) -> &'static str {
        match self {
            RewriteFailure::Decode => "decode",
            RewriteFailure::NotJson => "not_json",
            RewriteFailure::Panic => "panic",
            RewriteFailure::Injected => "injected",
        }
    }
}

/// Faults a test can force through the real binary. Read once; unset in
/// production, where no code path consults anything else.
static TEST_FAULTS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| std::env::var("PERMAPROXY_TEST_FAULTS").unwrap_or_default());

fn fault(name: &str) -> bool {
    TEST_FAULTS.split(',').any(|f| f.trim() == name)
}

/// Degrade, never drop: a rewrite that fails or even panics (a decoder, the
/// scanner, a bug) leaves the client with the upstream's original bytes,
/// never a reset or a 5xx. Counted and logged with the request id.
pub async fn guarded_rewrite(
    app: &App,
    x: &Exchange<'_>,
    resp_headers: &HeaderMap,
    raw: &Bytes,
) -> Option<Vec<u8>> {
    let request_id = x.request_id;
    use futures::FutureExt;
    let attempt = std::panic::AssertUnwindSafe(rewrite_body(app, x, resp_headers, raw))
        .catch_unwind()
        .await;
    let failure = match attempt {
        Ok(Ok(body)) => return body,
        Ok(Err(f)) => f,
        Err(_) => RewriteFailure::Panic,
    };
    metrics::get()
        .rewrite_failures
        .with_label_values(&[failure.as_str()])
        .inc();
    tracing::error!(
        request_id,
        reason = failure.as_str(),
        "rewrite failed: the upstream response is sent unchanged"
    );
    None
}

/// The new body, `Ok(None)` to send the upstream's bytes unchanged: sources
/// hosted on rewrite routes, this proxy's own URLs signed afresh on
/// re-sign routes.
async fn rewrite_body(
    app: &App,
    x: &Exchange<'_>,
    resp_headers: &HeaderMap,
    raw: &Bytes,
) -> Result<Option<Vec<u8>>, RewriteFailure> {
    if fault("rewrite_panic") {
        panic!("PERMAPROXY_TEST_FAULTS=rewrite_panic");
    }
    if fault("rewrite_error") {
        return Err(RewriteFailure::Injected);
    }
    let encoding = resp_headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase());
    let decoded = match encoding.as_deref() {
        None | Some("") | Some("identity") => raw.to_vec(),
        Some(enc) => decode(enc, raw, app.cfg.rewrite.max_body).ok_or(RewriteFailure::Decode)?,
    };
    let body_json: Option<serde_json::Map<String, serde_json::Value>> =
        if app.cfg.user_id.needs_request_body() {
            serde_json::from_slice(x.req_body).ok()
        } else {
            None
        };
    let facts = Facts {
        request_headers: x.req_headers,
        request_body: body_json.as_ref(),
        response_headers: resp_headers,
    };
    let base = public_base(app.cfg.public_base_url.as_deref(), x.req_headers);
    let mut out = None;
    if app.cfg.is_rewrite_path(x.path) {
        remember_starting_prediction(app, &decoded, &facts).await;
        out = host_sources_in(app, &decoded, &facts, &base, encoding.is_some()).await?;
    }
    if app.cfg.signing.is_resign_path(x.path) {
        if let Some(user) = app.cfg.user_id.resolve_trusted(&facts) {
            let current = out.as_deref().unwrap_or(&decoded);
            let now = crate::clock::now_ms() / 1000;
            if let Some(signed) = super::resign::resign(
                &app.cfg.signing,
                &app.cfg.variants.ignored_params,
                current,
                &user,
                &base,
                now,
            )
            .map_err(|_| RewriteFailure::NotJson)?
            {
                out = Some(signed);
            }
        }
    }
    Ok(out)
}

/// The sources of a rewrite-route body, hosted and swapped for their
/// hosted URLs; `Ok(None)` when nothing changes.
async fn host_sources_in(
    app: &App,
    decoded: &[u8],
    facts: &Facts<'_>,
    base: &str,
    was_encoded: bool,
) -> Result<Option<Vec<u8>>, RewriteFailure> {
    if !rewrite::may_contain_sources(decoded, app.cfg.rewrite.sources.needles()) {
        return Ok(None);
    }
    let scan =
        rewrite::scan(decoded, &app.cfg.rewrite.sources).map_err(|_| RewriteFailure::NotJson)?;
    if scan.found.is_empty() {
        return Ok(None);
    }
    let Some(owner) = app.cfg.user_id.resolve(facts) else {
        metrics::get().user_id_missing.inc();
        metrics::get()
            .rewritten_urls
            .with_label_values(&["kept"])
            .inc_by(scan.found.len() as u64);
        tracing::warn!("no trusted user id for this response: original URLs kept");
        return Ok(was_encoded.then(|| decoded.to_vec()));
    };
    let (sources, over_cap) = rewrite::distinct_sources(&scan, app.cfg.rewrite.max_sources);
    if over_cap > 0 {
        metrics::get()
            .rewritten_urls
            .with_label_values(&["over_cap"])
            .inc_by(over_cap as u64);
        tracing::warn!(
            over_cap,
            limit = app.cfg.rewrite.max_sources,
            "more sources than IMAGE_MAX_SOURCES_PER_RESPONSE: the rest keep their URLs"
        );
    }
    let replacements = app
        .hosting
        .host_sources(&owner, sources, scan.prediction_id.clone(), base)
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
    Ok(Some(rewrite::apply(decoded, &scan, &replacements)))
}

/// A prediction this response shows starting (or still processing) is
/// remembered with the request's user: its webhook, later, names no user.
/// Only with webhook capture on, and only bodies that say so are parsed.
async fn remember_starting_prediction(app: &App, body: &[u8], facts: &Facts<'_>) {
    #[derive(serde::Deserialize)]
    struct Prediction {
        id: Option<String>,
        status: Option<String>,
    }
    if app.cfg.webhook.paths.is_empty() {
        return;
    }
    let marked = [&b"\"starting\""[..], b"\"processing\""]
        .iter()
        .any(|m| memchr::memmem::find(body, m).is_some());
    if !marked {
        return;
    }
    let Ok(Prediction {
        id: Some(id),
        status: Some(status),
    }) = serde_json::from_slice::<Prediction>(body)
    else {
        return;
    };
    if !matches!(status.as_str(), "starting" | "processing") {
        return;
    }
    // Only a trusted id: the genuine, signed webhook that follows must not
    // be filed under whoever the client claimed to be.
    if let Some(user) = app.cfg.user_id.resolve_trusted(facts) {
        app.hosting.record_prediction(&id, &user).await;
    }
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
}
