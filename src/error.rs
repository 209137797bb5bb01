//! Errors that reach a client, and the one place they become HTTP responses.
//!
//! Every error body has the same stable shape,
//! `{"error": "<human message>", "code": "<stable_code>"}`, so clients can
//! branch on `code` while people read `error`.

use bytes::Bytes;
use serde::Serialize;

/// An error answered to an HTTP client. `code` strings are part of the API:
/// never rename one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("the client sent its request too slowly")]
    RequestTimeout,
    #[error("image not found")]
    ImageNotFound,
    /// Deleted within IMAGE_TOMBSTONE_DAYS (issue 20, finding 17); the
    /// body's `reason` says why.
    #[error("image was deleted ({})", .0.as_str())]
    ImageGone(crate::repo::GoneReason),
    #[error("image could not be stored: {0}")]
    ImageUnavailable(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("webhook refused: {0}")]
    WebhookRejected(&'static str),
    #[error("this URL needs a valid signature")]
    SignatureRequired,
    #[error("the URL's signature is not valid")]
    SignatureInvalid,
    #[error("the signed URL has expired")]
    UrlExpired,
    #[error("URL signing is off: set IMAGE_URL_SIGNING and IMAGE_SIGNING_KEYS")]
    SigningOff,
    #[error("admin API disabled: set ADMIN_TOKEN to enable it")]
    AdminDisabled,
    #[error("internal error")]
    Internal(String),
    /// A variant query (issue 14) that names an unknown parameter, a width
    /// not in IMAGE_VARIANT_WIDTHS, or a bad value. The body names the
    /// parameter; the code is the variant error's own.
    #[error("{0}")]
    BadVariant(crate::variants::VariantError),
    #[error("too many variants are being made; try again shortly")]
    TranscodeBusy { retry_after_secs: u64 },
    #[error("this variant cannot be made: {0}")]
    VariantTooLarge(String),
    #[error("the stored image cannot be decoded: {0}")]
    ImageUndecodable(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadPath(_) => 400,
            ApiError::BadRequest(_) => 400,
            ApiError::RequestTimeout => 408,
            ApiError::ImageNotFound => 404,
            ApiError::ImageGone(_) => 410,
            ApiError::ImageUnavailable(_) => 502,
            ApiError::MethodNotAllowed => 405,
            ApiError::RangeNotSatisfiable { .. } => 416,
            ApiError::RateLimited { .. } => 429,
            ApiError::UpstreamUnreachable(_) => 502,
            ApiError::UpstreamTimeout => 504,
            ApiError::StorageUnavailable(_) => 503,
            ApiError::Unauthorized => 401,
            ApiError::WebhookRejected(_) => 401,
            ApiError::SignatureRequired | ApiError::SignatureInvalid => 403,
            ApiError::UrlExpired => 410,
            ApiError::SigningOff => 409,
            ApiError::AdminDisabled => 403,
            ApiError::Internal(_) => 500,
            ApiError::BadVariant(_) => 400,
            ApiError::TranscodeBusy { .. } => 503,
            ApiError::VariantTooLarge(_) => 422,
            ApiError::ImageUndecodable(_) => 422,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadPath(_) => "bad_path",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::ImageNotFound => "image_not_found",
            ApiError::ImageGone(_) => "image_gone",
            ApiError::ImageUnavailable(_) => "image_unavailable",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::UpstreamUnreachable(_) => "upstream_unreachable",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Unauthorized => "unauthorized",
            ApiError::WebhookRejected(_) => "webhook_rejected",
            ApiError::SignatureRequired => "signature_required",
            ApiError::SignatureInvalid => "signature_invalid",
            ApiError::UrlExpired => "url_expired",
            ApiError::SigningOff => "signing_off",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::Internal(_) => "internal",
            ApiError::BadVariant(e) => e.code(),
            ApiError::TranscodeBusy { .. } => "transcode_busy",
            ApiError::VariantTooLarge(_) => "variant_too_large",
            ApiError::ImageUndecodable(_) => "image_undecodable",
        }
    }

    /// Extra headers that the status requires (RFC 9110 asks for them).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::TranscodeBusy { retry_after_secs } => {
                vec![("retry-after", retry_after_secs.max(&1).to_string())]
            }
            ApiError::RangeNotSatisfiable { size } => {
                vec![("content-range", format!("bytes */{size}"))]
            }
            ApiError::MethodNotAllowed => vec![("allow", "GET, HEAD".to_string())],
            ApiError::Unauthorized => vec![("www-authenticate", "Bearer".to_string())],
            _ => Vec::new(),
        }
    }

    /// The JSON body. Internal details are logged, not sent.
    pub fn body(&self) -> Bytes {
        let message = match self {
            ApiError::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        let parameter = match self {
            ApiError::BadVariant(e) => Some(e.parameter()),
            _ => None,
        };
        let reason = match self {
            ApiError::ImageGone(why) => Some(why.as_str()),
            _ => None,
        };
        error_body(self.code(), &message, parameter, reason)
    }
}

impl From<crate::hosting::VariantFail> for ApiError {
    fn from(f: crate::hosting::VariantFail) -> ApiError {
        use crate::hosting::VariantFail as F;
        match f {
            F::Missing => ApiError::ImageNotFound,
            F::Gone(why) => ApiError::ImageGone(why),
            F::Unavailable(why) => ApiError::ImageUnavailable(why),
            F::StoreDown(why) => ApiError::StorageUnavailable(why),
            // A queue of a few dozen makes drains within seconds.
            F::Busy => ApiError::TranscodeBusy {
                retry_after_secs: 1,
            },
            F::TooLarge(why) => ApiError::VariantTooLarge(why),
            F::Undecodable(why) => ApiError::ImageUndecodable(why),
            F::Internal(why) => ApiError::Internal(why),
            // Answered with a redirect before it gets here; if not, the
            // image is not ready, which is what 503 says.
            F::Redirect(_) => ApiError::StorageUnavailable("the image is still downloading".into()),
        }
    }
}

/// A stable JSON error body.
pub fn json_error(code: &str, message: &str) -> Bytes {
    error_body(code, message, None, None)
}

fn error_body(code: &str, message: &str, parameter: Option<&str>, reason: Option<&str>) -> Bytes {
    let body = ErrorBody {
        error: message.to_string(),
        code,
        parameter,
        reason,
    };
    // Serializing two strings cannot fail; fall back to a fixed body anyway
    // so no request path can panic here.
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(br#"{"error":"internal error","code":"internal"}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_stable_json() {
        let body = ApiError::ImageNotFound.body();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "image_not_found");
        assert_eq!(v["error"], "image not found");
    }

    #[test]
    fn internal_details_are_not_leaked() {
        let body = ApiError::Internal("secret path /etc".into()).body();
        assert!(!String::from_utf8_lossy(&body).contains("/etc"));
    }

    #[test]
    fn variant_errors_name_the_parameter() {
        let e = crate::variants::VariantSpec::parse("w=300", &[256]).unwrap_err();
        let e = ApiError::BadVariant(e);
        assert_eq!(e.status(), 400);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["code"], "width_not_allowed");
        assert_eq!(v["parameter"], "w");
        let gone = ApiError::ImageGone(crate::repo::GoneReason::UserLimit);
        let v: serde_json::Value = serde_json::from_slice(&gone.body()).unwrap();
        assert!(v.get("parameter").is_none(), "only variant errors carry it");
        assert_eq!(
            (gone.status(), &v["reason"]),
            (410, &serde_json::json!("user_limit"))
        );
        let busy = ApiError::TranscodeBusy {
            retry_after_secs: 1,
        };
        assert_eq!((busy.status(), busy.code()), (503, "transcode_busy"));
        assert_eq!(busy.extra_headers()[0].0, "retry-after");
    }

    #[test]
    fn rate_limit_has_retry_after() {
        let e = ApiError::RateLimited {
            retry_after_secs: 0,
        };
        assert_eq!(e.status(), 429);
        assert_eq!(e.extra_headers()[0], ("retry-after", "1".to_string()));
    }
}
