//! Answers `GET`/`HEAD /v1/images/hosted/{userId}/{imageId}.{ext}` from
//! memory or the store. Never forwarded upstream. With a variant query
//! (`?w=&h=&fit=&format=&q=`, issue 14) the answer is a variant: see
//! [`variant`].

mod variant;

use bytes::Bytes;
use futures::StreamExt;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{access, respond, App, Ctx};
use crate::cache::CachedImage;
use crate::error::ApiError;
use crate::hosting::Lookup;
use crate::ids::parse_hosted_path;
use crate::metrics;
use crate::serve::{self, Conditions, Plan};
use crate::store::{ImageMeta, StoreError};

pub async fn serve(app: &App, session: &mut Session, ctx: &mut Ctx) {
    if let Err(e) = serve_inner(app, session, ctx).await {
        if matches!(
            e,
            ApiError::ImageNotFound
                | ApiError::ImageGone(_)
                | ApiError::BadPath(_)
                | ApiError::ImageUnavailable(_)
        ) {
            ctx.tier.get_or_insert("miss");
        }
        if let Some(tier) = ctx.tier {
            metrics::get()
                .hosted_requests
                .with_label_values(&[tier])
                .inc();
        }
        respond::error(session, &e).await;
    }
}

async fn serve_inner(app: &App, session: &mut Session, ctx: &mut Ctx) -> Result<(), ApiError> {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    check_rate(app, session)?;
    let uri = &session.req_header().uri;
    let (key, _ext) = parse_hosted_path(uri.path())?;
    // IMAGE_IGNORED_PARAMS go first: outside the signed text, and never
    // part of a variant (finding 16).
    let query = app.cfg.variants.ignored_params.strip(uri.query());
    let now = crate::clock::now_ms() / 1000;
    let pass = Pass {
        grant: access::check(&app.cfg.signing, &key, uri.path(), query.as_deref(), now)?,
        now,
    };
    if let Some(spec) = variant::requested(app, query.as_deref())? {
        return variant::serve(app, session, ctx, key, spec, pass).await;
    }
    serve_original(app, session, ctx, &key, false, pass).await
}

/// What the signature check let through, carried to where the image's
/// private flag is known.
#[derive(Debug, Clone, Copy)]
struct Pass {
    grant: access::Grant,
    now: u64,
}

impl Pass {
    fn allows(self, app: &App, private: bool) -> Result<(), ApiError> {
        self.grant.allows(&app.cfg.signing, private)
    }

    /// Whether this request may be shown a private image: signed, or
    /// signing off. When not, a private image answers as a missing one.
    fn sees_private(self, app: &App) -> bool {
        self.grant.allows(&app.cfg.signing, true).is_ok()
    }

    fn cache_control(self) -> Option<String> {
        self.grant.cache_control(self.now)
    }
}

/// The image itself. `vary` (a `format=auto` request answered with the
/// original) adds `Vary: Accept`.
async fn serve_original(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    key: &crate::ids::ImageKey,
    vary: bool,
    pass: Pass,
) -> Result<(), ApiError> {
    let h = &app.hosting;
    // One more lookup after a lost object (finding 13): its row is pending
    // again by then, and the lookup downloads it afresh.
    let mut retried = false;
    loop {
        let found = h.open_image(key, pass.sees_private(app)).await;
        let (tier, body) = match found {
            Lookup::Memory(img) => ("memory", Body::Memory(img)),
            Lookup::Stored(meta) => match load(app, meta).await {
                Ok(body) => ("disk", body),
                Err(ApiError::ImageNotFound) if !retried => {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e),
            },
            Lookup::Fetched(meta) => ("pending", load(app, meta).await?),
            Lookup::Redirect(source) => return redirect(session, ctx, source).await,
            // The fresh download of a lost object failed: its source is
            // gone too, and this answer is the lost object's, a 404.
            Lookup::Unavailable(_) if retried => return Err(ApiError::ImageNotFound),
            Lookup::Unavailable(reason) => return Err(ApiError::ImageUnavailable(reason)),
            Lookup::StoreDown(reason) => return Err(ApiError::StorageUnavailable(reason)),
            Lookup::Gone(reason) => return Err(ApiError::ImageGone(reason)),
            Lookup::Missing => return Err(ApiError::ImageNotFound),
        };
        pass.allows(app, body.meta().private)?;
        ctx.tier = Some(tier);
        metrics::get()
            .hosted_requests
            .with_label_values(&[tier])
            .inc();
        h.record_request(key);
        let body = if vary { body.with_vary() } else { body };
        return match write_image(app, session, body, pass.cache_control()).await {
            // Streamed images open their object only here.
            Err(ApiError::ImageNotFound) if !retried => {
                retried = true;
                continue;
            }
            other => other,
        };
    }
}

/// The image is still downloading after IMAGE_PERSIST_TIMEOUT_MS: the
/// source still works, and nothing is cached.
async fn redirect(session: &mut Session, ctx: &mut Ctx, source: String) -> Result<(), ApiError> {
    ctx.tier = Some("pending");
    metrics::get()
        .hosted_requests
        .with_label_values(&["pending"])
        .inc();
    let headers = [
        ("location", source),
        ("cache-control", "no-store".to_string()),
    ];
    respond::write(session, 307, &headers, Bytes::new()).await;
    Ok(())
}

fn check_rate(app: &App, session: &Session) -> Result<(), ApiError> {
    let socket = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let xff: Vec<&str> = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(ip) = crate::forwarded::client_ip(socket, &xff, &app.cfg.serve_rate.forwarded) else {
        return Ok(());
    };
    app.limiter.check(ip).map_err(|retry_after_secs| {
        metrics::get().rate_limited.inc();
        ApiError::RateLimited { retry_after_secs }
    })
}

enum Body {
    Memory(CachedImage),
    Stream(std::sync::Arc<ImageMeta>),
}

impl Body {
    /// Shared, not copied: cloning an `ImageMeta` costs five allocations.
    fn meta(&self) -> &std::sync::Arc<ImageMeta> {
        match self {
            Body::Memory(img) => &img.meta,
            Body::Stream(meta) => meta,
        }
    }

    /// The same bytes answered with `Vary: Accept`. Pays for the metadata
    /// copy only on this path (`format=auto` answered with the original).
    fn with_vary(self) -> Body {
        let vary = |m: &ImageMeta| {
            std::sync::Arc::new(ImageMeta {
                vary_accept: true,
                ..m.clone()
            })
        };
        match self {
            Body::Memory(img) => Body::Memory(CachedImage {
                meta: vary(&img.meta),
                ..img
            }),
            Body::Stream(meta) => Body::Stream(vary(&meta)),
        }
    }
}

/// Small images are read whole into the memory cache and served from
/// there; large ones stream from the store without being held in memory.
async fn load(app: &App, meta: std::sync::Arc<ImageMeta>) -> Result<Body, ApiError> {
    let h = &app.hosting;
    if !h.fits_in_memory(meta.size) {
        return Ok(Body::Stream(meta));
    }
    match h.load_into_memory(meta.clone()).await {
        Ok(img) => Ok(Body::Memory(img)),
        Err(e) => Err(unreadable(app, &meta, e).await),
    }
}

/// A store error as the client sees it. A missing object, or one whose
/// length is not its row's, is a 404 (a lost object is counted and, when
/// its source may still answer, queued for a fresh download, which the
/// caller's second lookup finds); anything else is storage trouble.
async fn unreadable(app: &App, meta: &ImageMeta, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::ImageNotFound,
        StoreError::WrongSize { .. } => {
            app.hosting.lost(meta).await;
            ApiError::ImageNotFound
        }
        e => ApiError::StorageUnavailable(e.to_string()),
    }
}

/// The most one response writes before it lets the worker's other
/// connections run: with 100 clients pulling 10 MB each, one fast reader
/// could otherwise keep a worker to itself for a whole image while the
/// others wait (p99 4.6-6.7 s against nginx's 1 s; BENCHMARKS.md).
const WRITE_CHUNK: usize = 256 * 1024;

/// Where the body comes from once the headers are decided.
enum Source {
    /// A local file, sent by the kernel with sendfile(2): no user-space copy.
    File(std::fs::File),
    Stream(crate::store::ByteStream),
}

/// `cache_control`: set when a signed URL's expiry limits caching.
async fn write_image(
    app: &App,
    session: &mut Session,
    body: Body,
    cache_control: Option<String>,
) -> Result<(), ApiError> {
    let meta = std::sync::Arc::clone(body.meta());
    let req = session.req_header();
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    let conditions = Conditions {
        if_none_match: header("if-none-match"),
        if_modified_since: header("if-modified-since"),
        range: header("range"),
        if_range: header("if-range"),
    };
    let plan = serve::plan(&meta, &conditions);
    if plan == Plan::Unsatisfiable {
        return Err(ApiError::RangeNotSatisfiable { size: meta.size });
    }
    let head_only = req.method == http::Method::HEAD || plan == Plan::NotModified;
    let range = match plan {
        Plan::Partial(r) => Some(r),
        _ => None,
    };
    // Open the store before any header goes out, so a missing object (say,
    // deleted by another replica) is still an honest 404.
    let source = match (&body, head_only) {
        (Body::Stream(meta), false) => Some(open_source(app, session, meta, range).await?),
        (Body::Memory(_), false) => open_cached_file(app, session, &meta, range),
        _ => None,
    };
    // No case map: these names are ours and lowercase, and keeping a second
    // map of their original case cost a hash insert per header.
    let mut resp = ResponseHeader::build_no_case(serve::status(&plan), Some(10))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    for (k, v) in serve::headers(&meta, &plan) {
        resp.insert_header(k, v)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if let Some(cc) = cache_control {
        resp.insert_header("cache-control", cc)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    // The user's and the image's tags (the image's, for a variant), so a
    // delete purges them at the CDN: on 200, 206, 304 and HEAD alike.
    if let Some(t) = &app.cfg.cdn.tagging {
        resp.insert_header(t.header.clone(), t.value(&meta.key))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let resp = Box::new(resp);
    let (start, len) = range.map_or((0, meta.size), |r| (r.start, r.len()));
    let sent = match (body, source) {
        _ if head_only => {
            let _ = session.write_response_header(resp, true).await;
            0
        }
        (_, Some(Source::File(file))) => send_file(session, resp, &meta, &file, start, len).await,
        (Body::Memory(img), _) => {
            // Read-all checks the length against the row, so this holds;
            // a mismatch still must not panic on a request path.
            let Some(all) = slice(&img.bytes, start, len) else {
                return Err(ApiError::Internal(
                    "cached bytes shorter than their row".into(),
                ));
            };
            write_memory(session, resp, all).await
        }
        (Body::Stream(meta), Some(Source::Stream(stream))) => {
            if session.write_response_header(resp, false).await.is_err() {
                return Ok(());
            }
            stream_body(session, &meta, stream).await
        }
        (Body::Stream(_), None) => 0,
    };
    metrics::get().hosted_bytes_sent.inc_by(sent);
    Ok(())
}

/// `len` bytes from `start`, when `bytes` holds them.
fn slice(bytes: &Bytes, start: u64, len: u64) -> Option<Bytes> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= bytes.len()).then(|| bytes.slice(start..end))
}

/// The header and the first chunk leave in one `writev`; the shared `Bytes`
/// is written as it is, never copied in user space.
async fn write_memory(session: &mut Session, resp: Box<ResponseHeader>, all: Bytes) -> u64 {
    let first = all.slice(..all.len().min(WRITE_CHUNK));
    let mut sent = first.len();
    let last = sent == all.len();
    // Straight to the downstream session: the proxy layer's version would
    // run downstream modules, and this service has none.
    let first_write = session
        .as_downstream_mut()
        .write_response_header_with_body(resp, first, last)
        .await;
    if first_write.is_err() {
        return 0;
    }
    while sent < all.len() {
        tokio::task::yield_now().await;
        let chunk = all.slice(sent..all.len().min(sent + WRITE_CHUNK));
        let n = chunk.len();
        if session
            .write_response_body(Some(chunk), sent + n == all.len())
            .await
            .is_err()
        {
            break;
        }
        sent += n;
    }
    sent as u64
}

/// The body straight from the page cache with sendfile(2), in bounded
/// chunks with a yield between them, the header riding with the first.
async fn send_file(
    session: &mut Session,
    resp: Box<ResponseHeader>,
    meta: &ImageMeta,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> u64 {
    let mut sent = 0u64;
    let mut resp = Some(resp);
    while sent < len || resp.is_some() {
        let n = (len - sent).min(WRITE_CHUNK as u64) as usize;
        let wrote = match resp.take() {
            Some(resp) => {
                session
                    .as_downstream_mut()
                    .write_response_header_with_file(resp, file, start + sent, n)
                    .await
            }
            None => {
                tokio::task::yield_now().await;
                session
                    .as_downstream_mut()
                    .write_body_file(file, start + sent, n)
                    .await
            }
        };
        match wrote {
            Ok(n) => sent += n as u64,
            Err(e) => {
                // Almost always a client that went away: the file was checked
                // against its length before the header, and stored images
                // are replaced by rename, never truncated in place. Dropping
                // the connection is the honest signal either way.
                tracing::debug!(image = %meta.relative_path(), error = %e, "sendfile stopped");
                return sent;
            }
        }
    }
    let _ = session.write_response_body(None, true).await;
    sent
}

/// A memory hit larger than one write chunk still goes out with sendfile
/// when the store has the file: the page cache holds the same bytes, and
/// copying megabytes of cached buffer into the socket cost far more than
/// the kernel sending pages (10 MB: 9.3 ms against 1.4 ms of CPU per
/// request; BENCHMARKS.md). For one chunk or less the copy is as cheap as
/// the open and close, so small images never touch the filesystem. The
/// cached bytes are also the fallback: TLS, HTTP/2, object storage, or a
/// file gone meanwhile.
fn open_cached_file(
    app: &App,
    session: &Session,
    meta: &ImageMeta,
    range: Option<crate::store::ByteRange>,
) -> Option<Source> {
    let len = range.map_or(meta.size, |r| r.len());
    if len <= WRITE_CHUNK as u64 || !session.as_downstream().can_send_file() {
        return None;
    }
    match app.hosting.open_file(meta) {
        Ok(file) => file.map(Source::File),
        Err(_) => None,
    }
}

async fn open_source(
    app: &App,
    session: &Session,
    meta: &ImageMeta,
    range: Option<crate::store::ByteRange>,
) -> Result<Source, ApiError> {
    let h = &app.hosting;
    let opened = if session.as_downstream().can_send_file() {
        h.open_file(meta).map(|f| f.map(Source::File))
    } else {
        Ok(None)
    };
    let opened = match opened {
        Ok(Some(source)) => Ok(source),
        Ok(None) => h.open_stream(meta, range).await.map(Source::Stream),
        Err(e) => Err(e),
    };
    match opened {
        Ok(s) => Ok(s),
        Err(e) => Err(unreadable(app, meta, e).await),
    }
}

async fn stream_body(
    session: &mut Session,
    meta: &ImageMeta,
    mut stream: crate::store::ByteStream,
) -> u64 {
    let mut sent = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                sent += bytes.len() as u64;
                if session
                    .write_response_body(Some(bytes), false)
                    .await
                    .is_err()
                {
                    return sent;
                }
                // As in send_file: other connections get their turn.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                // Headers are out: cutting the connection is the only honest
                // signal left, so the client sees a short body, not a wrong one.
                tracing::error!(image = %meta.relative_path(), error = %e, "read failed mid-body");
                return sent;
            }
        }
    }
    let _ = session.write_response_body(None, true).await;
    sent
}
