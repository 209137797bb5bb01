//! The CDN purge settings: which provider, its ids and secrets, checked at
//! start so a missing token names itself instead of failing every purge.

use super::parse::Raw;
use super::ConfigError;
use crate::purge::{Provider, Tagging, Target};

#[derive(Debug, Clone)]
pub struct CdnConfig {
    /// How hosted answers are tagged; `None`: no tag header.
    pub tagging: Option<Tagging>,
    /// Where purges go; `None`: nothing is queued or sent.
    pub target: Option<Target>,
    /// Signs webhook purges (provider `webhook`).
    pub webhook_secret: Option<crate::webhook::WebhookSecret>,
    pub per_minute: u32,
}

impl CdnConfig {
    pub fn purging(&self) -> bool {
        self.target.is_some()
    }
}

pub(super) fn cdn(raw: &Raw) -> Result<CdnConfig, ConfigError> {
    let provider = match raw.get("CDN_PURGE_PROVIDER") {
        "" => None,
        v => Some(Provider::parse(v).ok_or_else(|| {
            ConfigError::new(
                "CDN_PURGE_PROVIDER",
                format!("{v:?} is not one of cloudflare, fastly, bunny, webhook"),
            )
        })?),
    };
    let header = raw.optional("IMAGE_CACHE_TAG_HEADER");
    if let Some(h) = &header {
        http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            ConfigError::new(
                "IMAGE_CACHE_TAG_HEADER",
                format!("{h:?} is not a header name"),
            )
        })?;
    }
    let tagging = Tagging::new(provider, header.as_deref());
    let base = raw.optional("CDN_PURGE_API_URL");
    if let Some(b) = &base {
        super::parse_http_url("CDN_PURGE_API_URL", b)?;
    }
    let (target, webhook_secret) = match provider {
        None => (None, None),
        Some(p) => target(raw, p, base)?,
    };
    let per_minute = match raw.parse::<u32>("CDN_PURGE_MAX_PER_MINUTE")? {
        0 => provider.map_or(0, Provider::default_per_minute),
        n => n,
    };
    Ok(CdnConfig {
        tagging,
        target,
        webhook_secret,
        per_minute,
    })
}

type Parts = (Option<Target>, Option<crate::webhook::WebhookSecret>);

fn target(raw: &Raw, p: Provider, base: Option<String>) -> Result<Parts, ConfigError> {
    let need = |name: &str| {
        raw.optional(name).ok_or_else(|| {
            ConfigError::new(name, format!("CDN_PURGE_PROVIDER={} needs it", p.as_str()))
        })
    };
    let (id, token) = match p {
        Provider::Cloudflare => ("CLOUDFLARE_ZONE_ID", "CLOUDFLARE_API_TOKEN"),
        Provider::Fastly => ("FASTLY_SERVICE_ID", "FASTLY_API_TOKEN"),
        Provider::Bunny => ("BUNNY_PULLZONE_ID", "BUNNY_API_KEY"),
        Provider::Webhook => ("", ""),
    };
    // Only Fastly marks objects stale instead of removing them.
    let soft = raw.bool("FASTLY_SOFT_PURGE")? && p == Provider::Fastly;
    Ok(match p {
        Provider::Cloudflare | Provider::Fastly | Provider::Bunny => {
            let t = Target::new(p, base, need(id)?, need(token)?, soft);
            (Some(t), None)
        }
        Provider::Webhook => {
            let url = need("CDN_PURGE_WEBHOOK_URL")?;
            super::parse_http_url("CDN_PURGE_WEBHOOK_URL", &url)?;
            let secret = crate::webhook::WebhookSecret::parse(&need("CDN_PURGE_WEBHOOK_SECRET")?)
                .map_err(|m| ConfigError::new("CDN_PURGE_WEBHOOK_SECRET", m))?;
            let t = Target::new(p, Some(url), String::new(), String::new(), false);
            (Some(t), Some(secret))
        }
    })
}
