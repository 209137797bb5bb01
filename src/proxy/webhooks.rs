//! Replicate's webhooks on their way to Studio API (issue 13): verified,
//! their images captured, and forwarded (rewritten and re-signed when
//! IMAGE_WEBHOOK_REWRITE is on). A webhook that cannot be captured for any
//! reason is forwarded exactly as it came: capture must never cost Studio
//! API a delivery.

use bytes::Bytes;
use http::HeaderMap;

use super::headers::public_base;
use super::App;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::hosting::Capture;
use crate::ids::{Owner, UserId};
use crate::metrics;
use crate::rewrite;
use crate::webhook::Signed;

/// What goes upstream.
pub struct Forward {
    pub body: Bytes,
    /// A new `webhook-signature` for a rewritten, verified body.
    pub signature: Option<String>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn count(outcome: &str) {
    metrics::get().webhooks.with_label_values(&[outcome]).inc();
}

/// Verifies, captures and (maybe) rewrites one webhook delivery.
pub async fn process(
    app: &App,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
) -> Result<Forward, ApiError> {
    let untouched = |body: Bytes| Forward {
        body,
        signature: None,
    };
    let cfg = &app.cfg.webhook;
    let signed = Signed {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signatures: header(headers, "webhook-signature"),
    };
    if let Some(secret) = &cfg.secret {
        let now = now_ms() / 1000;
        if let Err(why) = secret.verify(&signed, &body, now, cfg.tolerance_secs) {
            tracing::warn!(
                request_id,
                reason = why.as_str(),
                "webhook failed verification"
            );
            if cfg.reject_invalid {
                count("rejected");
                return Err(ApiError::WebhookRejected(why.as_str()));
            }
            count("unverified");
            return Ok(untouched(body));
        }
    }
    let Ok(scan) = rewrite::scan(&body, &app.cfg.rewrite.sources) else {
        return Ok(untouched(body));
    };
    let (sources, _) = rewrite::distinct_sources(&scan, app.cfg.rewrite.max_sources);
    if sources.is_empty() {
        return Ok(untouched(body));
    }
    let owner = whose(app, scan.prediction_id.as_deref(), uri).await;
    let base = public_base(app.cfg.public_base_url.as_deref(), headers);
    let delivery = (!signed.id.is_empty()).then_some(signed.id);
    let replacements = match app
        .hosting
        .capture(&owner, sources, scan.prediction_id.clone(), delivery, &base)
        .await
    {
        Capture::Captured(r) => {
            count("captured");
            tracing::info!(request_id, user = %owner.user, images = r.len(), "webhook captured");
            r
        }
        // Replicate retries a delivery Studio API did not take (a 5xx, no
        // answer): the retry must carry the same hosted URLs, or Studio API
        // finally stores Replicate's, which die within the hour.
        Capture::Duplicate(r) => {
            count("duplicate");
            r
        }
        Capture::Failed => return Ok(untouched(body)),
    };
    if !cfg.rewrite || replacements.is_empty() {
        return Ok(untouched(body));
    }
    let new_body = rewrite::apply(&body, &scan, &replacements);
    // Studio API verifies the webhook too: a rewritten body gets a fresh
    // signature with the same id and timestamp. Only a body that verified
    // is re-signed; without a secret there is nothing to keep valid.
    let signature = cfg
        .secret
        .as_ref()
        .map(|s| s.sign(signed.id, signed.timestamp, &new_body));
    Ok(Forward {
        body: Bytes::from(new_body),
        signature,
    })
}

/// Whose images these are: the user the prediction was seen starting for
/// (recorded from trusted ids only, so trusted), else the webhook URL's user
/// parameter (Studio API built that URL, but the signature does not cover
/// it, so it is not trusted), else `anonymous`, counted.
async fn whose(app: &App, prediction_id: Option<&str>, uri: &http::Uri) -> Owner {
    if let Some(id) = prediction_id {
        if let Some(user) = app.hosting.prediction_user(id).await {
            return Owner {
                user,
                trusted: true,
            };
        }
    }
    if let Some(param) = &app.cfg.webhook.user_param {
        let found = uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == param.as_str())
                .map(|(_, v)| v.into_owned())
        });
        if let Some(raw) = found.filter(|v| !v.trim().is_empty()) {
            return Owner::untrusted(UserId::sanitize(raw.trim()));
        }
    }
    metrics::get().webhook_anonymous.inc();
    Owner::untrusted(UserId::anonymous())
}
