//! Answers `GET`/`HEAD /v1/images/hosted/{userId}/{imageId}.{ext}` from
//! memory or the store. Never forwarded upstream. With a variant query
//! (`?w=&h=&fit=&format=&q=`, issue 14) the answer is a variant: see
//! [`variant`].

mod variant;

use bytes::Bytes;
use futures::StreamExt;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{respond, App, Ctx};
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
            ApiError::ImageNotFound | ApiError::BadPath(_) | ApiError::ImageUnavailable(_)
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
    let (key, _ext) = parse_hosted_path(session.req_header().uri.path())?;
    if let Some(spec) = variant::requested(app, session)? {
        return variant::serve(app, session, ctx, key, spec).await;
    }
    serve_original(app, session, ctx, &key, false).await
}

/// The image itself. `vary` (a `format=auto` request answered with the
/// original) adds `Vary: Accept`.
async fn serve_original(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    key: &crate::ids::ImageKey,
    vary: bool,
) -> Result<(), ApiError> {
    let h = &app.hosting;
    let (tier, body) = match h.open_image(key).await {
        Lookup::Memory(img) => ("memory", Body::Memory(img)),
        Lookup::Stored(meta) => ("disk", load(app, meta).await?),
        Lookup::Fetched(meta) => ("pending", load(app, meta).await?),
        Lookup::Redirect(source) => {
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
            return Ok(());
        }
        Lookup::Unavailable(reason) => return Err(ApiError::ImageUnavailable(reason)),
        Lookup::StoreDown(reason) => return Err(ApiError::StorageUnavailable(reason)),
        Lookup::Missing => return Err(ApiError::ImageNotFound),
    };
    ctx.tier = Some(tier);
    metrics::get()
        .hosted_requests
        .with_label_values(&[tier])
        .inc();
    h.record_request(key);
    let body = if vary { body.with_vary() } else { body };
    write_image(app, session, body).await
}

fn check_rate(app: &App, session: &Session) -> Result<(), ApiError> {
    let socket = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let xff = session
        .req_header()
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let Some(ip) = crate::limits::client_ip(socket, xff, app.cfg.serve_rate.trust_forwarded_for)
    else {
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
    match h.load_into_memory(meta).await {
        Ok(img) => Ok(Body::Memory(img)),
        Err(StoreError::NotFound) => Err(ApiError::ImageNotFound),
        Err(e) => Err(ApiError::StorageUnavailable(e.to_string())),
    }
}

async fn write_image(app: &App, session: &mut Session, body: Body) -> Result<(), ApiError> {
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
    let stream = match (&body, head_only) {
        (Body::Stream(meta), false) => Some(open_stream(app, meta, range).await?),
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
    if session
        .write_response_header(Box::new(resp), head_only)
        .await
        .is_err()
        || head_only
    {
        return Ok(());
    }
    let sent = match (body, stream) {
        (Body::Memory(img), _) => {
            let slice = match range {
                Some(r) => img.bytes.slice(r.start as usize..=r.end as usize),
                None => img.bytes.clone(),
            };
            let n = slice.len() as u64;
            let _ = session.write_response_body(Some(slice), true).await;
            n
        }
        (Body::Stream(meta), Some(stream)) => stream_body(session, &meta, stream).await,
        (Body::Stream(_), None) => 0,
    };
    metrics::get().hosted_bytes_sent.inc_by(sent);
    Ok(())
}

async fn open_stream(
    app: &App,
    meta: &ImageMeta,
    range: Option<crate::store::ByteRange>,
) -> Result<crate::store::ByteStream, ApiError> {
    match app.hosting.open_stream(meta, range).await {
        Ok(s) => Ok(s),
        Err(StoreError::NotFound) => Err(ApiError::ImageNotFound),
        Err(e) => Err(ApiError::StorageUnavailable(e.to_string())),
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
