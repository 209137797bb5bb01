//! The web page's state-changing actions. Each is a POST that
//! [`super::ui`] has already checked for a session and its CSRF token,
//! and each answers 303 to a page, so a reload never repeats it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Form;

use super::api::{parse_key, parse_user};
use super::respond::{see_other, UiFail};
use super::Ctx;
use crate::error::ApiError;

type Done = Result<Response, UiFail>;

pub async fn delete_image(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
) -> Done {
    let key = parse_key(&user, &image)?;
    if !ctx.hosting.delete_image(&key).await? {
        return Err(ApiError::ImageNotFound.into());
    }
    tracing::info!(image = %key, "deleted from the admin page");
    Ok(see_other(&format!("/admin/ui/users/{}", key.user)))
}

#[derive(serde::Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    confirm: String,
}

/// Deleting a user's images needs the user id typed out again.
pub async fn delete_user(
    State(ctx): State<Arc<Ctx>>,
    Path(user): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Done {
    let user = parse_user(&user)?;
    if form.confirm.trim() != user.as_str() {
        return Err(UiFail::Form(format!(
            "Nothing was deleted: type the user id “{user}” exactly to confirm."
        )));
    }
    let n = ctx.hosting.delete_user(&user).await?;
    tracing::info!(%user, images = n, "user's images deleted from the admin page");
    Ok(see_other(&format!("/admin/ui/users/{user}")))
}

/// Another try for a failed download; back to the failed list.
pub async fn retry(
    State(ctx): State<Arc<Ctx>>,
    Path((user, image)): Path<(String, String)>,
) -> Done {
    let key = parse_key(&user, &image)?;
    if !ctx.hosting.retry_failed(&key).await? {
        return Err(UiFail::Form(
            "That download is no longer failed (retried or deleted already), or has no source to fetch again."
                .into(),
        ));
    }
    Ok(see_other("/admin/ui/failed"))
}
