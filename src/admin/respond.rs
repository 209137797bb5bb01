//! The one place where admin outcomes become HTTP: JSON replies and
//! [`ApiError`] bodies for the API, HTML pages and redirects for the web
//! page, and the headers every admin response carries.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use crate::error::ApiError;
use crate::hosting::HostError;

/// The page's scripts and styles come from this listener only (no CDN, no
/// inline script), images too (the thumbnails are served here), and forms
/// post back here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// A whole response with a content type; admin answers are never cached
/// unless a handler says otherwise.
pub fn reply(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(status: u16, v: &serde_json::Value) -> Response {
    reply(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// An API error: its status, its stable JSON body and the headers the
/// status requires.
pub fn api_error(e: &ApiError) -> Response {
    let mut r = reply(e.status(), "application/json", e.body());
    for (k, v) in e.extra_headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

/// An [`ApiError`] returned by an API handler.
pub struct ApiFail(pub ApiError);

impl From<ApiError> for ApiFail {
    fn from(e: ApiError) -> ApiFail {
        ApiFail(e)
    }
}

impl IntoResponse for ApiFail {
    fn into_response(self) -> Response {
        api_error(&self.0)
    }
}

/// The engine could not answer: 503 with its reason.
pub fn unavailable(e: HostError) -> ApiError {
    ApiError::StorageUnavailable(e.to_string())
}

/// Why a web page cannot be shown.
#[derive(Debug)]
pub enum UiFail {
    /// Anything the API would answer with this error; shown as a page.
    Api(ApiError),
    /// No (valid) session: to the login form.
    Login,
    /// A POST without the session's CSRF token.
    Csrf,
    /// A form that does not say what it must (the confirmation, say).
    Form(String),
    /// A template failed to render (a bug): logged, a plain 500.
    Render(String),
}

impl From<ApiError> for UiFail {
    fn from(e: ApiError) -> UiFail {
        UiFail::Api(e)
    }
}

impl From<HostError> for UiFail {
    fn from(e: HostError) -> UiFail {
        UiFail::Api(unavailable(e))
    }
}

impl From<askama::Error> for UiFail {
    fn from(e: askama::Error) -> UiFail {
        UiFail::Render(e.to_string())
    }
}

impl IntoResponse for UiFail {
    fn into_response(self) -> Response {
        let (status, title, detail) = match self {
            UiFail::Login => return see_other("/admin/ui/login"),
            // Admin disabled is the same 403 JSON as the API: there is no
            // page to show.
            UiFail::Api(e @ ApiError::AdminDisabled) => return api_error(&e),
            UiFail::Api(e) => {
                let mut r =
                    super::pages::error_page(e.status(), "Something went wrong", &e.to_string());
                for (k, v) in e.extra_headers() {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        r.headers_mut().insert(k, v);
                    }
                }
                return r;
            }
            UiFail::Csrf => (
                403,
                "Refused",
                "This form was not sent from the admin page (its CSRF token is missing or \
                 wrong). Reload the page and try again."
                    .to_string(),
            ),
            UiFail::Form(why) => (400, "Not done", why),
            UiFail::Render(e) => {
                tracing::error!(error = %e, "admin page failed to render");
                return reply(500, "text/plain; charset=utf-8", "internal error");
            }
        };
        super::pages::error_page(status, title, &detail)
    }
}

/// 303 to `to`: the answer to a form, so a reload does not post it again.
pub fn see_other(to: &str) -> Response {
    let mut r = reply(303, "text/plain; charset=utf-8", Body::empty());
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An HTML page.
pub fn html(status: u16, body: String) -> Response {
    reply(status, "text/html; charset=utf-8", body)
}

/// Headers on every admin response: no framing, no referrer leaving the
/// page (URLs carry user ids), a strict CSP, no sniffing, and no caching
/// unless the handler chose a policy.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
