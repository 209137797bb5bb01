//! The admin web page's routes and its gatekeeping: the login form, the
//! session every other page needs, and the CSRF token every POST must
//! carry. The pages themselves are in [`super::views`], the POSTs in
//! [`super::actions`].

use std::sync::Arc;

use askama::Template;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use http::{header, HeaderValue, Method};

use super::auth::{self, Keys, Session};
use super::listener::Peer;
use super::pages::{error_page, Chrome, LoginPage};
use super::respond::{html, see_other, UiFail};
use super::{actions, assets, media, views, Ctx};
use crate::clock::now_ms;
use crate::error::ApiError;

/// Forms here are a token and a few ids.
const FORM_LIMIT: usize = 16 * 1024;

pub fn routes(ctx: Arc<Ctx>) -> Router<Arc<Ctx>> {
    let open = Router::new()
        .route("/admin/ui/login", get(login_page).post(login))
        .route("/admin/ui/assets/{name}", get(assets::asset))
        .route_layer(from_fn_with_state(ctx.clone(), require_enabled));
    let private = Router::new()
        .route("/admin/ui", get(views::overview))
        .route("/admin/ui/users", get(views::users))
        .route("/admin/ui/users/{user}", get(views::gallery))
        .route("/admin/ui/users/{user}/delete", post(actions::delete_user))
        .route("/admin/ui/users/{user}/images/{image}", get(views::image))
        .route(
            "/admin/ui/users/{user}/images/{image}/delete",
            post(actions::delete_image),
        )
        .route("/admin/ui/media/{user}/{file}", get(media::media))
        .route("/admin/ui/failed", get(views::failed))
        .route(
            "/admin/ui/failed/{user}/{image}/retry",
            post(actions::retry),
        )
        .route("/admin/ui/cleanup", get(views::cleanup))
        .route("/admin/ui/logout", post(logout))
        .route_layer(from_fn_with_state(ctx, require_session));
    open.merge(private)
}

fn keys(ctx: &Ctx) -> Result<&Keys, UiFail> {
    ctx.keys
        .as_ref()
        .ok_or(UiFail::Api(ApiError::AdminDisabled))
}

/// The page exists only when `ADMIN_TOKEN` is set, like the API.
async fn require_enabled(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    match keys(&ctx) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The request's session, if its cookie is valid now.
pub fn session_of(ctx: &Ctx, headers: &http::HeaderMap) -> Option<Session> {
    let keys = ctx.keys.as_ref()?;
    keys.verify(auth::cookie_value(headers)?, now_ms())
}

/// Every page but the login form needs a session; every POST also needs
/// the session's CSRF token, in the form's `csrf` field (or an
/// `X-CSRF-Token` header). Checked here, once, so no handler can forget.
async fn require_session(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    match check_session(&ctx, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check_session(ctx: &Ctx, mut req: Request) -> Result<Request, UiFail> {
    let keys = keys(ctx)?;
    let session = session_of(ctx, req.headers()).ok_or(UiFail::Login)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let (parts, body) = req.into_parts();
        let bytes = to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| UiFail::Form("The form is too large.".into()))?;
        let header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let field = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        let given = header.or(field).unwrap_or_default();
        if !keys.csrf_ok(&session, &given) {
            tracing::warn!(path = %parts.uri.path(), "admin POST refused: missing or wrong CSRF token");
            return Err(UiFail::Csrf);
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    Ok(req)
}

/// The frame of a page for this session.
pub fn chrome(ctx: &Ctx, session: &Session, active: &'static str) -> Chrome {
    let csrf = ctx
        .keys
        .as_ref()
        .map(|k| k.csrf(session))
        .unwrap_or_default();
    Chrome::new(csrf, active)
}

async fn login_page(State(ctx): State<Arc<Ctx>>, req: Request) -> Result<Response, UiFail> {
    if session_of(&ctx, req.headers()).is_some() {
        return Ok(see_other("/admin/ui"));
    }
    let page = LoginPage {
        chrome: Chrome::anonymous(),
        error: None,
    };
    Ok(html(200, page.render()?))
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// No CSRF token here (there is no session yet to tie one to); the
/// cookie is `SameSite=Strict`, and the form only proves the token.
async fn login(
    State(ctx): State<Arc<Ctx>>,
    peer: Option<Extension<Peer>>,
    headers: http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiFail> {
    let keys = keys(&ctx)?;
    let peer = peer.map(|Extension(p)| p);
    if let Some(e) = ctx.throttled(peer.as_ref()) {
        return Err(UiFail::Api(e));
    }
    if !keys.token_ok(&form.token) {
        tracing::warn!("admin login refused: wrong token");
        if let e @ ApiError::RateLimited { .. } = ctx.refusal(peer.as_ref(), ApiError::Unauthorized)
        {
            return Err(UiFail::Api(e));
        }
        let page = LoginPage {
            chrome: Chrome::anonymous(),
            error: Some("That is not the admin token."),
        };
        return Ok(html(401, page.render()?));
    }
    let (_, value) = keys.issue(now_ms());
    let mut r = see_other("/admin/ui");
    let cookie = auth::set_cookie(Some(&value), auth::came_over_https(&headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    tracing::info!("admin login");
    Ok(r)
}

async fn logout(headers: http::HeaderMap) -> Response {
    let mut r = see_other("/admin/ui/login");
    let cookie = auth::set_cookie(None, auth::came_over_https(&headers));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// An unknown page under `/admin/ui`: the login form for strangers, a 404
/// page for the logged in.
pub fn not_found(ctx: &Ctx, req: &Request) -> Response {
    if ctx.keys.is_none() {
        return UiFail::Api(ApiError::AdminDisabled).into_response();
    }
    if session_of(ctx, req.headers()).is_none() {
        return UiFail::Login.into_response();
    }
    error_page(404, "Not found", "There is no such page.")
}
