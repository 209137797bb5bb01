//! The web page's reads: overview, users, a user's gallery, one image,
//! failed downloads, the cleanup preview, and the image bytes behind the
//! thumbnails. Each handler gathers rows from the engine and hands them
//! to a template in [`super::pages`].

use std::sync::Arc;

use askama::Template;
use axum::extract::{Extension, Path, Query, State};
use axum::response::Response;

use super::api::{failed_cursor, parse_cursor, parse_key, parse_user};
use super::auth::Session;
use super::charts::{chart, OUTCOMES, TIERS};
use super::pages::*;
use super::respond::{html, UiFail};
use super::ui::chrome;
use super::Ctx;
use crate::clock::now_ms;
use crate::error::ApiError;
use crate::ids::{ImageId, UserId};
use crate::repo::ImageState;

pub(super) type Page = Result<Response, UiFail>;

const USERS_PAGE: u32 = 50;
const GALLERY_PAGE: u32 = 48;
const FAILED_PAGE: u32 = 50;
const TOP_IMAGES: u32 = 12;
const PREVIEW_ROWS: usize = 200;
const DAY_MS: u64 = 86_400_000;

/// An owed purge older than this is what the alert fires on, too.
const PURGE_LATE_MS: u64 = 15 * 60 * 1000;

fn purge_stat(p: &crate::repo::PurgeStats, now: u64) -> Stat {
    let age = p.oldest_queued_at.map(|at| now.saturating_sub(at));
    let mut note = match age {
        Some(ms) => format!("oldest {} s", ms / 1000),
        None => "none owed".to_string(),
    };
    if let Some(e) = &p.last_error {
        note.push_str(&format!("; last error: {e}"));
    }
    Stat {
        label: "CDN purges queued",
        value: p.queued.to_string(),
        note,
        href: None,
        alert: age.is_some_and(|ms| ms > PURGE_LATE_MS),
    }
}

pub async fn overview(State(ctx): State<Arc<Ctx>>, Extension(s): Extension<Session>) -> Page {
    let h = &ctx.hosting;
    let now = now_ms();
    let t = h.totals().await?;
    let free = h.free_bytes();
    let stats = vec![
        Stat {
            label: "Images stored",
            value: t.images.to_string(),
            note: String::new(),
            href: Some("/admin/ui/users"),
            alert: false,
        },
        Stat {
            label: "Bytes stored",
            value: human_bytes(t.bytes),
            note: format!("{} bytes", t.bytes),
            href: None,
            alert: false,
        },
        Stat {
            label: "Disk free",
            value: free.map_or_else(|| "n/a".into(), human_bytes),
            note: if free.is_some() {
                "where images live".into()
            } else {
                format!("{} store", h.store_name())
            },
            href: None,
            alert: free.is_some_and(|f| f < ctx.hosting.free_floor()),
        },
        Stat {
            label: "Pending downloads",
            value: t.pending.to_string(),
            note: "handed out, not stored yet".into(),
            href: None,
            alert: false,
        },
        Stat {
            label: "Failed downloads",
            value: t.failed.to_string(),
            note: "failed for good".into(),
            href: Some("/admin/ui/failed"),
            alert: t.failed > 0,
        },
    ];
    let mut stats = stats;
    if let Some(p) = h.purge_stats().await {
        stats.push(purge_stat(&p, now));
    }
    let (tiers, downloads) = ctx.charts.snapshot();
    let charts = vec![
        chart(
            "Hosted-image requests",
            "per second, by tier",
            TIERS,
            &tiers,
            false,
        ),
        chart(
            "Downloads",
            "per 10 s, by outcome",
            OUTCOMES,
            &downloads,
            true,
        ),
    ];
    let top = h
        .top_viewed(DAY_MS, TOP_IMAGES)
        .await?
        .into_iter()
        .map(|t| {
            let key = t.key.clone();
            TopRow {
                recent: t.recent_views,
                card: Card {
                    user: key.user.to_string(),
                    id: key.id.to_string(),
                    href: detail_url(&key),
                    thumb: Some(thumbnail_url(&key, t.format)),
                    state: "stored",
                    format: t.format.ext().to_uppercase(),
                    size: human_bytes(t.size),
                    views_label: views_label(t.views),
                    last: when(now, t.requested_at),
                    width: 256,
                    height: 256,
                },
            }
        })
        .collect();
    let page = OverviewPage {
        chrome: chrome(&ctx, &s, "overview"),
        stats,
        charts,
        top,
        database: h.database_name(),
        store: h.store_name(),
        replica: h.replica_id().to_string(),
    };
    Ok(html(200, page.render()?))
}

#[derive(serde::Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    after: Option<String>,
}

pub async fn users(
    State(ctx): State<Arc<Ctx>>,
    Extension(s): Extension<Session>,
    Query(q): Query<UsersQuery>,
) -> Page {
    let now = now_ms();
    let prefix = q.q.trim();
    let after = q.after.as_deref().and_then(UserId::parse);
    let mut rows = ctx
        .hosting
        .users(prefix, after.as_ref(), USERS_PAGE + 1)
        .await?;
    let next = (rows.len() > USERS_PAGE as usize).then(|| {
        rows.truncate(USERS_PAGE as usize);
        let last = rows.last().map(|u| u.user.to_string()).unwrap_or_default();
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", prefix)
            .append_pair("after", &last)
            .finish();
        format!("/admin/ui/users?{qs}")
    });
    let users = rows
        .into_iter()
        .map(|u| UserRow {
            href: format!("/admin/ui/users/{}", u.user),
            user: u.user.to_string(),
            images: u.images,
            bytes: human_bytes(u.bytes),
            last: when(now, u.last_requested),
        })
        .collect();
    let page = UsersPage {
        chrome: chrome(&ctx, &s, "users"),
        q: prefix.to_string(),
        users,
        next,
    };
    Ok(html(200, page.render()?))
}

#[derive(serde::Deserialize, Default)]
pub struct AfterQuery {
    after: Option<String>,
}

pub async fn gallery(
    State(ctx): State<Arc<Ctx>>,
    Extension(s): Extension<Session>,
    Path(user): Path<String>,
    Query(q): Query<AfterQuery>,
) -> Page {
    let now = now_ms();
    let user = parse_user(&user)?;
    let after = q.after.as_deref().and_then(ImageId::parse);
    let mut rows = ctx
        .hosting
        .user_images(&user, after.as_ref(), GALLERY_PAGE + 1)
        .await?;
    let next = (rows.len() > GALLERY_PAGE as usize).then(|| {
        rows.truncate(GALLERY_PAGE as usize);
        let last = rows
            .last()
            .map(|r| r.key.id.to_string())
            .unwrap_or_default();
        format!("/admin/ui/users/{user}?after={last}")
    });
    // The user's totals: the first user at or after this id with it as a
    // prefix is this user, if they have stored images.
    let totals = ctx
        .hosting
        .users(user.as_str(), None, 1)
        .await?
        .into_iter()
        .find(|u| u.user == user);
    let page = GalleryPage {
        chrome: chrome(&ctx, &s, "users"),
        user: user.to_string(),
        images: totals.as_ref().map_or(0, |t| t.images),
        bytes: human_bytes(totals.as_ref().map_or(0, |t| t.bytes)),
        cards: rows.iter().map(|r| card(r, now)).collect(),
        next,
        export_href: format!("/admin/users/{user}/export.zip"),
        delete_action: format!("/admin/ui/users/{user}/delete"),
    };
    Ok(html(200, page.render()?))
}

fn opt_time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".into(), crate::clock::rfc3339)
}

pub async fn image(
    State(ctx): State<Arc<Ctx>>,
    Extension(s): Extension<Session>,
    Path((user, image)): Path<(String, String)>,
) -> Page {
    let now = now_ms();
    let key = parse_key(&user, &image)?;
    let r = ctx
        .hosting
        .image_record(&key)
        .await?
        .ok_or(ApiError::ImageNotFound)?;
    let expires = r.requested_at + crate::clock::ms(ctx.cfg.lifecycle.max_age);
    let stored = r.state == ImageState::Stored;
    let fields = vec![
        ("User id", r.key.user.to_string()),
        ("Image id", r.key.id.to_string()),
        ("State", r.state.as_str().to_string()),
        ("Format", r.format.ext().to_string()),
        ("Content type", r.format.content_type().to_string()),
        (
            "Size",
            format!("{} ({} bytes)", human_bytes(r.size), r.size),
        ),
        (
            "Dimensions",
            r.width
                .zip(r.height)
                .map_or_else(|| "—".into(), |(w, h)| format!("{w} × {h}")),
        ),
        (
            "SHA-256",
            if stored {
                r.sha256.clone()
            } else {
                "—".into()
            },
        ),
        ("File path", r.key.relative_path(r.format)),
        (
            "Prediction id",
            r.prediction_id.clone().unwrap_or_else(|| "—".into()),
        ),
        ("Views", r.views.to_string()),
        (
            "Last request",
            format!(
                "{} ({})",
                crate::clock::rfc3339(r.requested_at),
                ago(now, r.requested_at)
            ),
        ),
        ("Created", crate::clock::rfc3339(r.created_at)),
        ("Stored", opt_time(r.stored_at)),
        ("Expires if not requested", crate::clock::rfc3339(expires)),
        ("Download attempts", r.attempts.to_string()),
        ("Failed at", opt_time(r.failed_at)),
        (
            "Due at",
            if r.due_at == 0 {
                "—".into()
            } else {
                crate::clock::rfc3339(r.due_at)
            },
        ),
        (
            "Lease",
            r.lease_owner.clone().map_or_else(
                || "—".into(),
                |o| format!("{o} until {}", crate::clock::rfc3339(r.lease_until)),
            ),
        ),
        ("Private", if r.private { "yes" } else { "no" }.to_string()),
    ];
    let source_link = r
        .source_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"));
    let page = ImagePage {
        chrome: chrome(&ctx, &s, "users"),
        preview: stored.then(|| media_url(&r.key, r.format)),
        hosted_url: ctx.hosted_url(&r),
        source_url: r.source_url.clone(),
        source_link,
        last_error: r.last_error.clone(),
        gallery_href: format!("/admin/ui/users/{}", r.key.user),
        delete_action: format!("{}/delete", detail_url(&r.key)),
        fields,
        card: card(&r, now),
    };
    Ok(html(200, page.render()?))
}

#[derive(serde::Deserialize, Default)]
pub struct CursorQuery {
    cursor: Option<String>,
}

pub async fn failed(
    State(ctx): State<Arc<Ctx>>,
    Extension(s): Extension<Session>,
    Query(q): Query<CursorQuery>,
) -> Page {
    let now = now_ms();
    let cursor = q.cursor.as_deref().and_then(parse_cursor);
    let mut rows = ctx.hosting.failed(cursor.as_ref(), FAILED_PAGE + 1).await?;
    let next = (rows.len() > FAILED_PAGE as usize).then(|| {
        rows.truncate(FAILED_PAGE as usize);
        let c = rows.last().map(failed_cursor).unwrap_or_default();
        let qs: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("cursor", &c)
            .finish();
        format!("/admin/ui/failed?{qs}")
    });
    let total = ctx.hosting.totals().await?.failed;
    let rows = rows
        .into_iter()
        .map(|r| FailedRow {
            user: r.key.user.to_string(),
            id: r.key.id.to_string(),
            href: detail_url(&r.key),
            source: r.source_url.clone().unwrap_or_else(|| "data: URI".into()),
            error: r.last_error.clone().unwrap_or_default(),
            attempts: r.attempts,
            failed: when(now, r.failed_at.unwrap_or(0)),
            retry_action: format!("/admin/ui/failed/{}/{}/retry", r.key.user, r.key.id),
            can_retry: r.source_url.is_some(),
        })
        .collect();
    let page = FailedPage {
        chrome: chrome(&ctx, &s, "failed"),
        total,
        rows,
        next,
    };
    Ok(html(200, page.render()?))
}

fn explain(reason: &str) -> &'static str {
    match reason {
        "expired" => "not requested for IMAGE_MAX_AGE_DAYS",
        "user_limit" => "beyond IMAGE_PER_USER_LIMIT, least recently requested first",
        "storage_cap" => "stored bytes over IMAGE_STORAGE_MAX_BYTES",
        "min_free" => "free disk below IMAGE_MIN_FREE_BYTES",
        _ => "",
    }
}

pub async fn cleanup(State(ctx): State<Arc<Ctx>>, Extension(s): Extension<Session>) -> Page {
    let now = now_ms();
    let lc = &ctx.cfg.lifecycle;
    let p = ctx.hosting.cleanup_preview(PREVIEW_ROWS).await?;
    let days = lc.max_age.as_secs_f64() / 86_400.0;
    let rules = vec![
        (
            "Retention",
            format!("{} days without a request", (days * 100.0).round() / 100.0),
        ),
        (
            "Per-user limit",
            match lc.per_user_limit {
                0 => "none".to_string(),
                n => format!("{n} images"),
            },
        ),
        (
            "Storage cap",
            lc.storage_max_bytes
                .map_or_else(|| "none".into(), human_bytes),
        ),
        (
            "Minimum free disk",
            match ctx.hosting.free_floor() {
                0 => "none".to_string(),
                n => human_bytes(n),
            },
        ),
    ];
    let reasons = p
        .by_reason
        .iter()
        .map(|(reason, (images, bytes))| ReasonRow {
            reason,
            why: explain(reason),
            images: *images,
            bytes: human_bytes(*bytes),
        })
        .collect();
    let shown = p.first.len() as u64;
    let rows = p
        .first
        .iter()
        .map(|(r, reason)| PlanRow {
            card: card(r, now),
            reason: reason.as_str(),
        })
        .collect();
    let page = CleanupPage {
        chrome: chrome(&ctx, &s, "cleanup"),
        rules,
        images: p.images,
        bytes: human_bytes(p.bytes),
        reasons,
        rows,
        more: p.images.saturating_sub(shown),
    };
    Ok(html(200, page.render()?))
}
