//! Writing whole responses from inside a filter.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::error::ApiError;

/// Writes a complete response. A client that went away is not an error
/// worth more than a debug line.
pub async fn write(session: &mut Session, status: u16, headers: &[(&str, String)], body: Bytes) {
    let Ok(mut resp) = ResponseHeader::build(status, Some(headers.len() + 2)) else {
        return;
    };
    for (k, v) in headers {
        let _ = resp.insert_header(k.to_string(), v.as_str());
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    let _ = resp.insert_header("content-length", body.len().to_string());
    let empty = body.is_empty() || head_only;
    if let Err(e) = session.write_response_header(Box::new(resp), empty).await {
        tracing::debug!(error = %e, "client went away before the response header");
        return;
    }
    if !empty {
        if let Err(e) = session.write_response_body(Some(body), true).await {
            tracing::debug!(error = %e, "client went away during the response body");
        }
    }
}

/// The one place an [`ApiError`] becomes an HTTP response.
pub async fn error(session: &mut Session, e: &ApiError) {
    if let ApiError::Internal(detail) = e {
        tracing::error!(%detail, "internal error");
    }
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    headers.extend(e.extra_headers());
    write(session, e.status(), &headers, e.body()).await;
}

pub async fn json(session: &mut Session, status: u16, body: &serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("cache-control", "no-store".to_string()),
    ];
    write(session, status, &headers, Bytes::from(bytes)).await;
}
