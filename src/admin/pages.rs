//! The web page's templates and the data they show. Templates are askama
//! files under `templates/admin/`, compiled into the binary and escaped
//! automatically: every string a user or a source controls reaches the
//! page through them, never through string concatenation. Values are
//! formatted here, so templates stay free of logic.

use askama::Template;
use axum::response::Response;

use super::charts::ChartView;
use super::respond::{html, reply};
use crate::clock::rfc3339;
use crate::ids::ImageKey;
use crate::image_format::Format;
use crate::repo::{ImageRecord, ImageState};

/// What every page's frame needs: the nav, and the CSRF token for the
/// logout form.
pub struct Chrome {
    pub logged_in: bool,
    pub csrf: String,
    pub active: &'static str,
    pub asset_version: &'static str,
}

impl Chrome {
    pub fn new(csrf: String, active: &'static str) -> Chrome {
        Chrome {
            logged_in: true,
            csrf,
            active,
            asset_version: super::assets::version(),
        }
    }

    pub fn anonymous() -> Chrome {
        Chrome {
            logged_in: false,
            csrf: String::new(),
            active: "",
            asset_version: super::assets::version(),
        }
    }
}

/// The one function that decides a thumbnail's URL: a 256 px wide
/// variant, served by this listener (`/admin/ui/media/...?w=256`), which
/// falls back to the original (scaled by the browser) when resizing is off
/// or the image cannot be resized. Served here rather than from the public
/// hosted URL so that browsing the page neither counts as a view nor
/// refreshes the image's retention, and so the CSP can stay
/// `img-src 'self'`.
pub fn thumbnail_url(key: &ImageKey, format: Format) -> String {
    format!("{}?w={THUMBNAIL_WIDTH}", media_url(key, format))
}

/// The gallery's cells are about 190 CSS px wide: 256 covers most of a
/// 2x screen at a fraction of a full image's bytes.
const THUMBNAIL_WIDTH: u32 = 256;

/// The original bytes, through the admin listener.
pub fn media_url(key: &ImageKey, format: Format) -> String {
    format!("/admin/ui/media/{}/{}.{}", key.user, key.id, format.ext())
}

pub fn detail_url(key: &ImageKey) -> String {
    format!("/admin/ui/users/{}/images/{}", key.user, key.id)
}

/// `1.5 MB`: decimal units, as disks are sold.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `5 min ago`; `never` for 0.
pub fn ago(now_ms: u64, at_ms: u64) -> String {
    if at_ms == 0 {
        return "never".into();
    }
    if at_ms > now_ms {
        return "just now".into();
    }
    let s = (now_ms - at_ms) / 1000;
    match s {
        0..=9 => "just now".into(),
        10..=59 => format!("{s} s ago"),
        60..=3_599 => format!("{} min ago", s / 60),
        3_600..=86_399 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

pub fn views_label(n: u64) -> String {
    if n == 1 {
        "1 view".into()
    } else {
        format!("{n} views")
    }
}

/// A time as people read it, and as machines do (`<time datetime>`).
pub struct When {
    pub ago: String,
    pub iso: String,
}

pub fn when(now_ms: u64, at_ms: u64) -> When {
    When {
        ago: ago(now_ms, at_ms),
        iso: if at_ms == 0 {
            String::new()
        } else {
            rfc3339(at_ms)
        },
    }
}

/// One image in a grid.
pub struct Card {
    pub user: String,
    pub id: String,
    pub href: String,
    /// Only for stored images.
    pub thumb: Option<String>,
    pub state: &'static str,
    pub format: String,
    pub size: String,
    /// `1 view`, `3 views`.
    pub views_label: String,
    pub last: When,
    pub width: u32,
    pub height: u32,
}

pub fn card(r: &ImageRecord, now_ms: u64) -> Card {
    let stored = r.state == ImageState::Stored;
    Card {
        user: r.key.user.to_string(),
        id: r.key.id.to_string(),
        href: detail_url(&r.key),
        thumb: stored.then(|| thumbnail_url(&r.key, r.format)),
        state: r.state.as_str(),
        format: r.format.ext().to_uppercase(),
        size: if stored {
            human_bytes(r.size)
        } else {
            "—".into()
        },
        views_label: views_label(r.views),
        last: when(now_ms, r.requested_at),
        // The layout box before the bytes arrive; square when unknown.
        width: r.width.unwrap_or(256),
        height: r.height.unwrap_or(256),
    }
}

#[derive(Template)]
#[template(path = "admin/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub error: Option<&'static str>,
}

pub struct Stat {
    pub label: &'static str,
    pub value: String,
    pub note: String,
    pub href: Option<&'static str>,
    pub alert: bool,
}

pub struct TopRow {
    pub card: Card,
    pub recent: u64,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub stats: Vec<Stat>,
    pub charts: Vec<ChartView>,
    pub top: Vec<TopRow>,
    pub database: &'static str,
    pub store: &'static str,
    pub replica: String,
}

pub struct UserRow {
    pub user: String,
    pub href: String,
    pub images: u64,
    pub bytes: String,
    pub last: When,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
pub struct UsersPage {
    pub chrome: Chrome,
    pub q: String,
    pub users: Vec<UserRow>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/gallery.html")]
pub struct GalleryPage {
    pub chrome: Chrome,
    pub user: String,
    pub images: u64,
    pub bytes: String,
    pub cards: Vec<Card>,
    pub next: Option<String>,
    pub export_href: String,
    pub delete_action: String,
}

#[derive(Template)]
#[template(path = "admin/image.html")]
pub struct ImagePage {
    pub chrome: Chrome,
    pub card: Card,
    pub preview: Option<String>,
    pub hosted_url: String,
    pub source_url: Option<String>,
    /// Only http(s) sources become links; anything else stays text.
    pub source_link: bool,
    pub fields: Vec<(&'static str, String)>,
    pub last_error: Option<String>,
    pub gallery_href: String,
    pub delete_action: String,
}

pub struct FailedRow {
    pub user: String,
    pub id: String,
    pub href: String,
    pub source: String,
    pub error: String,
    pub attempts: u32,
    pub failed: When,
    pub retry_action: String,
    pub can_retry: bool,
}

#[derive(Template)]
#[template(path = "admin/failed.html")]
pub struct FailedPage {
    pub chrome: Chrome,
    pub total: u64,
    pub rows: Vec<FailedRow>,
    pub next: Option<String>,
}

pub struct ReasonRow {
    pub reason: &'static str,
    pub why: &'static str,
    pub images: u64,
    pub bytes: String,
}

pub struct PlanRow {
    pub card: Card,
    pub reason: &'static str,
}

#[derive(Template)]
#[template(path = "admin/cleanup.html")]
pub struct CleanupPage {
    pub chrome: Chrome,
    pub rules: Vec<(&'static str, String)>,
    pub images: u64,
    pub bytes: String,
    pub reasons: Vec<ReasonRow>,
    pub rows: Vec<PlanRow>,
    pub more: u64,
}

#[derive(Template)]
#[template(path = "admin/error.html")]
pub struct ErrorPage<'a> {
    pub chrome: Chrome,
    pub status: u16,
    pub title: &'a str,
    pub detail: &'a str,
}

pub fn error_page(status: u16, title: &str, detail: &str) -> Response {
    let page = ErrorPage {
        chrome: Chrome::anonymous(),
        status,
        title,
        detail,
    };
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "admin error page failed to render");
            reply(status, "text/plain; charset=utf-8", detail.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(250_000_000), "250 MB");
        assert_eq!(ago(100_000, 0), "never");
        assert_eq!(ago(100_000, 95_000), "just now");
        assert_eq!(ago(100_000_000, 100_000_000 - 5 * 60_000), "5 min ago");
        assert_eq!(ago(10 * 86_400_000, 86_400_000), "9 d ago");
    }

    #[test]
    fn user_text_is_escaped() {
        let page = ErrorPage {
            chrome: Chrome::anonymous(),
            status: 400,
            title: "t",
            detail: "<img src=x onerror=alert(1)>",
        };
        let body = page.render().unwrap();
        assert!(!body.contains("<img src=x"), "{body}");
        assert!(
            body.contains("&#60;img src=x") || body.contains("&lt;img src=x"),
            "{body}"
        );
    }
}
