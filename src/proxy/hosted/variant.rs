//! Variant requests (issue 14): `?w=&h=&fit=&format=&q=` on a hosted image.
//!
//! The query is checked before anything is looked up (an unknown parameter,
//! a width outside IMAGE_VARIANT_WIDTHS or a bad value is a 400 naming it);
//! the engine then says where the answer comes from, and the answer is
//! written exactly like an image's: strong ETag (the variant's own digest),
//! Range, 304 and the immutable header, plus `Vary: Accept` for
//! `format=auto`.

use pingora::proxy::Session;

use super::{load, redirect, serve_original, write_image, App, Body, Ctx, Pass};
use crate::error::ApiError;
use crate::hosting::{VariantFail, VariantLookup};
use crate::ids::ImageKey;
use crate::metrics;
use crate::variants::VariantSpec;

/// The variant asked for, if the query asks for one. `exp` and `sig`
/// (signed URLs) are not variant parameters: a query of only those is the
/// image itself.
/// `query`: the request's, without IMAGE_IGNORED_PARAMS.
pub(super) fn requested(app: &App, query: Option<&str>) -> Result<Option<VariantSpec>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    VariantSpec::parse(query, &app.cfg.variants.widths).map_err(|e| {
        rejected();
        ApiError::BadVariant(e)
    })
}

fn rejected() {
    metrics::get()
        .variants
        .with_label_values(&["rejected"])
        .inc();
}

pub(super) async fn serve(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    key: ImageKey,
    spec: VariantSpec,
    pass: Pass,
) -> Result<(), ApiError> {
    // A variant's metadata does not carry its image's private flag (it can
    // change after the variant is made), so it is read from the image.
    let sees_private = pass.sees_private(app);
    if !sees_private {
        let private = app
            .hosting
            .is_private(&key)
            .await
            .map_err(ApiError::StorageUnavailable)?;
        pass.allows(app, private)?;
    }
    let accept = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A second try only when a recorded variant's bytes turned out to be
    // gone: the engine forgets it, and this try makes it again.
    let mut retried = false;
    loop {
        let found = app
            .hosting
            .open_variant(&key, spec, accept.as_deref(), sees_private)
            .await;
        let (tier, body) = match found {
            Ok(VariantLookup::Memory(img)) => ("memory", Body::Memory(img)),
            Ok(VariantLookup::Stored(meta)) => match load(app, meta.clone()).await {
                Ok(body) => ("disk", body),
                Err(ApiError::ImageNotFound) if !retried => {
                    app.hosting.forget_lost_variant(&meta).await;
                    retried = true;
                    continue;
                }
                Err(e) => return Err(e),
            },
            Ok(VariantLookup::Original { vary }) => {
                return serve_original(app, session, ctx, &key, vary, pass).await;
            }
            Err(VariantFail::Redirect(source)) => {
                return redirect(session, ctx, source).await;
            }
            Err(f) => {
                if matches!(
                    f,
                    VariantFail::Busy | VariantFail::TooLarge(_) | VariantFail::Undecodable(_)
                ) {
                    rejected();
                }
                return Err(f.into());
            }
        };
        let meta = body.meta().clone();
        ctx.tier = Some(tier);
        metrics::get()
            .hosted_requests
            .with_label_values(&[tier])
            .inc();
        // A variant served is its image requested: retention counts it.
        app.hosting.record_request(&key);
        return match write_image(app, session, body, pass.cache_control()).await {
            // Streamed variants open their object only here.
            Err(ApiError::ImageNotFound) if !retried => {
                app.hosting.forget_lost_variant(&meta).await;
                retried = true;
                continue;
            }
            other => other,
        };
    }
}
