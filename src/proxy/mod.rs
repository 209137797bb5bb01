//! The Pingora `ProxyHttp` glue. It only routes: hosted images are answered
//! by [`hosted`], rewrite routes by [`crate::forward`], and everything else
//! is proxied by Pingora itself, untouched.

pub mod access;
pub mod forward;
pub mod headers;
pub mod hosted;
mod resign;
pub mod respond;
mod rewriting;
mod webhooks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;

use crate::config::Config;
use crate::error::ApiError;
use crate::hosting::Hosting;
use crate::ids::HOSTED_PREFIX;
use crate::limits::RateLimiter;
use crate::metrics;
use forward::{Forwarder, Mode};

/// Railway's health check reaches only the public port; this path is
/// answered here and never forwarded.
pub const PUBLIC_HEALTH_PATH: &str = "/__permaproxy/healthz";

/// Requests in flight, so a graceful stop can exit as soon as they finish.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Hosted,
    Rewrite,
    Webhook,
    Passthrough,
    Health,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Hosted => "hosted",
            Route::Rewrite => "rewrite",
            Route::Webhook => "webhook",
            Route::Passthrough => "passthrough",
            Route::Health => "health",
        }
    }
}

pub struct Ctx {
    pub route: Route,
    pub started: Instant,
    /// The client's `X-Request-Id` when it sent a sane one, else our own;
    /// logged with the request, never added to what goes upstream.
    pub request_id: String,
    /// Where a hosted image came from: memory, disk, pending or miss.
    pub tier: Option<&'static str>,
    _in_flight: InFlight,
}

struct InFlight;

impl InFlight {
    fn new() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct App {
    pub cfg: Arc<Config>,
    pub hosting: Arc<Hosting>,
    pub limiter: RateLimiter,
    pub forwarder: Forwarder,
    upstream_addrs: Mutex<(Vec<SocketAddr>, Instant)>,
}

/// How long a DNS answer for the upstream is reused. Railway's private
/// names move when a service redeploys, so it must not be cached forever.
const UPSTREAM_DNS_TTL: Duration = Duration::from_secs(10);

impl App {
    pub fn new(cfg: Arc<Config>, hosting: Arc<Hosting>) -> Result<App, String> {
        Ok(App {
            limiter: RateLimiter::new(&cfg.serve_rate),
            forwarder: Forwarder::new(&cfg).map_err(|e| format!("HTTP client: {e}"))?,
            cfg,
            hosting,
            upstream_addrs: Mutex::new((Vec::new(), Instant::now())),
        })
    }

    async fn upstream_addr(&self) -> Result<SocketAddr, ApiError> {
        {
            let cached = self
                .upstream_addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(a) = cached.0.first() {
                if cached.1.elapsed() < UPSTREAM_DNS_TTL {
                    return Ok(*a);
                }
            }
        }
        let up = &self.cfg.upstream;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((up.host.as_str(), up.port))
            .await
            .map_err(|e| ApiError::UpstreamUnreachable(format!("cannot resolve {}: {e}", up.host)))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| ApiError::UpstreamUnreachable(format!("{} has no address", up.host)))?;
        *self
            .upstream_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (addrs, Instant::now());
        Ok(first)
    }
}

#[async_trait]
impl ProxyHttp for App {
    type CTX = Ctx;

    /// No downstream modules. Pingora's default adds a response-compression
    /// module at level 0, which compresses nothing but still builds a
    /// context and runs its filters on every request (about 1.5% of a
    /// pass-through request's instructions; BENCHMARKS.md).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            route: Route::Passthrough,
            started: Instant::now(),
            request_id: String::new(),
            tier: None,
            _in_flight: InFlight::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = headers::request_id(session.req_header().headers.get("x-request-id"));
        let path = session.req_header().uri.path();
        if path == PUBLIC_HEALTH_PATH {
            ctx.route = Route::Health;
            // 503 while draining, as /readyz: a balancer that can only
            // reach the public port stops sending before it closes.
            let (status, body) = if crate::shutdown::draining() {
                (503, serde_json::json!({"status": "draining"}))
            } else {
                (200, serde_json::json!({"status": "ok"}))
            };
            respond::json(session, status, &body).await;
            return Ok(true);
        }
        if path.starts_with(HOSTED_PREFIX) {
            ctx.route = Route::Hosted;
            hosted::serve(self, session, ctx).await;
            return Ok(true);
        }
        // An upgrade (WebSocket) is a conversation, not a JSON answer: it
        // takes Pingora's pass-through path, which carries it, whatever
        // the route.
        let mode = if session.is_upgrade_req() {
            None
        } else if self.cfg.hosting_enabled
            && self.cfg.webhook.matches(path)
            && session.req_header().method == http::Method::POST
        {
            ctx.route = Route::Webhook;
            Some(Mode::Webhook)
        } else if self.cfg.is_rewrite_path(path) || self.cfg.signing.is_resign_path(path) {
            ctx.route = Route::Rewrite;
            Some(Mode::Rewrite)
        } else if session
            .req_header()
            .headers
            .contains_key("transfer-encoding")
        {
            // A chunked body is checked here before anything goes upstream;
            // Pingora would stream a broken one on.
            Some(Mode::Plain)
        } else {
            None
        };
        if let Some(mode) = mode {
            if let Err(e) = forward::exchange(self, session, &ctx.request_id, mode).await {
                if matches!(e, ApiError::BadRequest(_) | ApiError::RequestTimeout) {
                    // The rest of a badly framed body cannot be told apart
                    // from a next request: this connection is done.
                    session.set_keepalive(None);
                }
                respond::error(session, &e).await;
            }
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let addr = self
            .upstream_addr()
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e.to_string()))?;
        let up = &self.cfg.upstream;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        for (name, value) in headers::forwarded_headers(
            req.headers.get("x-forwarded-for"),
            req.headers.get("host"),
            client,
        ) {
            req.insert_header(name, value)?;
        }
        req.insert_header("host", self.cfg.upstream.authority.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        for name in self.cfg.user_id.private_response_headers() {
            resp.remove_header(name);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(code)) if *code < 500 => {
                session.respond_error(*code).await.ok();
                return FailToProxy {
                    error_code: *code,
                    can_reuse_downstream: false,
                };
            }
            (ErrorSource::Downstream, _) => {
                // The client broke the exchange: nobody is left to answer.
                return FailToProxy {
                    error_code: 0,
                    can_reuse_downstream: false,
                };
            }
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => ApiError::UpstreamTimeout,
            (ErrorSource::Upstream, _)
            | (
                _,
                ErrorType::ConnectNoRoute | ErrorType::ConnectRefused | ErrorType::ConnectError,
            ) => ApiError::UpstreamUnreachable(e.etype().as_str().to_string()),
            _ => ApiError::Internal(e.to_string()),
        };
        if matches!(
            err,
            ApiError::UpstreamTimeout | ApiError::UpstreamUnreachable(_)
        ) {
            metrics::get().upstream_errors.inc();
            tracing::warn!(route = ctx.route.as_str(), error = %e, "upstream failed");
        }
        respond::error(session, &err).await;
        FailToProxy {
            error_code: err.status(),
            can_reuse_downstream: false,
        }
    }

    /// Pingora's error lines carry this; the default includes the whole
    /// query string, which may hold tokens.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, crate::logging::redact_path(&req.uri))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let route = ctx.route.as_str();
        let m = metrics::get();
        m.http_requests
            .with_label_values(&[route, metrics::status_class(status)])
            .inc();
        m.http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        // Not through tracing: its JSON formatter cost +21% per pass-through
        // request. Same line, same filter (see logging::access).
        if crate::logging::access::enabled() {
            let req = session.req_header();
            crate::logging::access::record(&crate::logging::access::Access {
                method: req.method.as_str(),
                uri: &req.uri,
                status,
                duration: elapsed,
                bytes: session.body_bytes_sent(),
                route,
                tier: ctx.tier.unwrap_or("-"),
                request_id: &ctx.request_id,
            });
        }
    }
}
