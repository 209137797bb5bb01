//! The private admin listener (`METRICS_ADDR`): liveness, readiness,
//! metrics, the JSON admin API and the admin web page. It must never be
//! reachable from the internet; `/admin/` also requires `ADMIN_TOKEN` (the
//! bearer header for the API, a signed session cookie for the page).
//!
//! It runs on axum (hyper 1) inside a Pingora background service rather
//! than as a Pingora `ServeHttp` app: `ServeHttp` answers with a whole
//! `Vec<u8>`, and the zip export must stream with bounded memory.
//!
//! - [`api`]: the JSON API and the health routes;
//! - [`ui`]: the web page's routes, login, session and CSRF checks;
//! - [`views`] and [`actions`]: the web page's reads and its POSTs;
//! - [`pages`]: the templates' data (askama, auto-escaped);
//! - [`auth`]: bearer token, session cookie, CSRF;
//! - [`export`]: a user's images as a streamed zip;
//! - [`charts`]: in-process counters sampled for the overview's charts;
//! - [`respond`]: outcomes to HTTP, in one place;
//! - [`listener`]: the accept loop, with a header read timeout.

mod actions;
mod api;
mod assets;
mod auth;
mod charts;
mod export;
mod listener;
mod media;
mod pages;
mod respond;
mod signed;
mod ui;
mod views;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::Config;
use crate::error::ApiError;
use crate::hosting::Hosting;
use crate::repo::ImageRecord;

/// What every admin handler shares.
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub hosting: Arc<Hosting>,
    /// `None` when `ADMIN_TOKEN` is not set: `/admin/` answers 403.
    keys: Option<auth::Keys>,
    charts: charts::Charts,
    /// Wrong tokens per client address (see [`Ctx::refusal`]).
    wrong_tokens: crate::limits::RateLimiter,
}

/// Wrong tokens a client may send at once, then one per 5 s: a guessing
/// run against a 32-character token gets nowhere, and an operator who
/// mistypes is not locked out.
const WRONG_TOKEN_BURST: f64 = 10.0;
const WRONG_TOKENS_PER_SEC: f64 = 0.2;

impl Ctx {
    pub fn new(cfg: Arc<Config>, hosting: Arc<Hosting>) -> Ctx {
        let keys = cfg
            .admin_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(auth::Keys::new);
        Ctx {
            cfg,
            hosting,
            keys,
            charts: charts::Charts::default(),
            wrong_tokens: crate::limits::RateLimiter::with(
                WRONG_TOKENS_PER_SEC,
                WRONG_TOKEN_BURST,
                64,
            ),
        }
    }

    /// What to answer a wrong token from `peer` with: `e`, until the
    /// client has spent its tries, then 429 (and [`Ctx::throttled`]
    /// refuses it outright until a try comes back). Right tokens are never
    /// counted.
    pub fn refusal(&self, peer: Option<&listener::Peer>, e: ApiError) -> ApiError {
        if !matches!(e, ApiError::Unauthorized) {
            return e;
        }
        let Some(peer) = peer else {
            return e;
        };
        match self.wrong_tokens.check(peer.0) {
            Ok(()) => e,
            Err(retry_after_secs) => {
                tracing::warn!(client = %peer.0, "admin: too many wrong tokens");
                ApiError::RateLimited { retry_after_secs }
            }
        }
    }

    /// `429` for a client that has spent its wrong tokens, whatever it
    /// sends now, the right token included. Were the right token let
    /// through, a guesser would still learn which guess was right at full
    /// speed (429 for wrong, 200 for right); refused outright, it gets one
    /// answer per refill (5 s). The operator on the same address waits at
    /// most that long, and a 32-character token makes guessing hopeless
    /// anyway. `None` while the client may try.
    pub fn throttled(&self, peer: Option<&listener::Peer>) -> Option<ApiError> {
        // No token configured: every route answers 403 anyway.
        self.keys.as_ref()?;
        let retry_after_secs = self.wrong_tokens.peek(peer?.0).err()?;
        tracing::warn!(client = %peer?.0, "admin: refused while throttled for wrong tokens");
        Some(ApiError::RateLimited { retry_after_secs })
    }

    /// The bearer check of every `/admin/` API route, throttled.
    pub fn check_bearer(&self, req: &http::request::Parts) -> Result<(), ApiError> {
        if let Some(e) = self.throttled(req.extensions.get()) {
            return Err(e);
        }
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        auth::check_bearer(self.keys.as_ref(), header)
            .map_err(|e| self.refusal(req.extensions.get(), e))
    }

    /// The public URL of an image, as the API hands it out: signed (with
    /// IMAGE_URL_TTL_SECS) when IMAGE_URL_SIGNING is on.
    pub fn hosted_url(&self, r: &ImageRecord) -> String {
        let base = self.cfg.public_base_url.as_deref().unwrap_or_default();
        let path = r.key.hosted_path(r.format);
        let now = crate::clock::now_ms() / 1000;
        crate::signing::hosted_url(&self.cfg.signing, base, &path, &[], now)
    }
}

/// Every route of the admin listener.
pub fn router(ctx: Arc<Ctx>) -> Router {
    api::open_routes()
        .merge(api::routes(ctx.clone()))
        .merge(signed::routes(ctx.clone()))
        .merge(ui::routes(ctx.clone()))
        .route("/admin/users/{user}/export.zip", get(export::export))
        .fallback(api::fallback)
        .method_not_allowed_fallback(api::fallback)
        .layer(axum::middleware::from_fn(respond::security_headers))
        .with_state(ctx)
}

/// The admin listener as a Pingora background service. The socket is bound
/// when the service is built, so a taken `METRICS_ADDR` stops the start
/// with a clear error instead of a listener that never answers.
pub struct AdminService {
    ctx: Arc<Ctx>,
    listener: Mutex<Option<TcpListener>>,
}

impl AdminService {
    pub fn bind(cfg: Arc<Config>, hosting: Arc<Hosting>) -> Result<AdminService, String> {
        let addr = cfg.metrics_addr.clone();
        let listener = TcpListener::bind(&addr).map_err(|e| format!("METRICS_ADDR {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("METRICS_ADDR {addr}: {e}"))?;
        Ok(AdminService {
            ctx: Arc::new(Ctx::new(cfg, hosting)),
            listener: Mutex::new(Some(listener)),
        })
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let taken = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(std_listener) = taken else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener could not start");
                return;
            }
        };
        // The overview's charts sample the counters every 10 s, for as
        // long as the listener runs.
        let sampler = tokio::spawn(charts::run_sampler(self.ctx.clone()));
        listener::serve(listener, router(self.ctx.clone()), shutdown).await;
        sampler.abort();
    }
}
