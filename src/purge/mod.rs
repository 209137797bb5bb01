//! CDN purge: which tags a hosted answer carries, and what one purge
//! request to each provider looks like. Pure: the queue lives in the
//! database beside the delete that owes it, and the engine sends it
//! (`hosting/purges.rs`).
//!
//! Every hosted answer carries two short tags: one for its user and one for
//! its image, shared by all the image's variants. A delete queues the
//! image's tag (or, for a whole user, the user's), so one purge clears the
//! original and every variant at the edge.

use sha2::{Digest, Sha256};

use crate::ids::{ImageKey, UserId};

/// The providers whose tag purge APIs are spoken, and the signed webhook
/// for any other CDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cloudflare,
    Fastly,
    Bunny,
    Webhook,
}

impl Provider {
    pub fn parse(s: &str) -> Option<Provider> {
        Some(match s {
            "cloudflare" => Provider::Cloudflare,
            "fastly" => Provider::Fastly,
            "bunny" => Provider::Bunny,
            "webhook" => Provider::Webhook,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cloudflare => "cloudflare",
            Provider::Fastly => "fastly",
            Provider::Bunny => "bunny",
            Provider::Webhook => "webhook",
        }
    }

    /// The response header the provider reads tags from (and strips).
    pub fn tag_header(self) -> Option<&'static str> {
        match self {
            Provider::Cloudflare => Some("cache-tag"),
            Provider::Fastly => Some("surrogate-key"),
            Provider::Bunny => Some("cdn-tag"),
            Provider::Webhook => None,
        }
    }

    /// Fastly separates keys with spaces; the others with commas.
    fn separator(self) -> &'static str {
        match self {
            Provider::Fastly => " ",
            _ => ",",
        }
    }

    /// Tags per purge request, as each API documents it: Cloudflare takes
    /// 100, Fastly 256 surrogate keys, Bunny one tag per call.
    pub fn batch(self) -> usize {
        match self {
            Provider::Cloudflare | Provider::Webhook => 100,
            Provider::Fastly => 256,
            Provider::Bunny => 1,
        }
    }

    /// Requests a minute when CDN_PURGE_MAX_PER_MINUTE is 0: Cloudflare's
    /// free plan allows 5 tag purges a minute (paid plans more).
    pub fn default_per_minute(self) -> u32 {
        match self {
            Provider::Cloudflare => 5,
            Provider::Fastly | Provider::Bunny => 60,
            Provider::Webhook => 600,
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            Provider::Cloudflare => "https://api.cloudflare.com",
            Provider::Fastly => "https://api.fastly.com",
            Provider::Bunny => "https://api.bunny.net",
            Provider::Webhook => "",
        }
    }
}

/// The first 16 hex characters of SHA-256 of a labelled name: short, and
/// derived only from what the hosted URL already shows.
fn tag(label: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("permaproxy:{label}:{name}").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("pp{}{hex}", &label[..1])
}

pub fn user_tag(user: &UserId) -> String {
    tag("user", user.as_str())
}

pub fn image_tag(key: &ImageKey) -> String {
    tag("image", &format!("{}/{}", key.user, key.id))
}

/// How hosted answers are tagged: the header name and its separator.
#[derive(Debug, Clone)]
pub struct Tagging {
    pub header: String,
    separator: &'static str,
}

impl Tagging {
    /// `override_header`: IMAGE_CACHE_TAG_HEADER (CloudFront's configured
    /// name, say). `None` when neither names a header: nothing is sent.
    pub fn new(provider: Option<Provider>, override_header: Option<&str>) -> Option<Tagging> {
        let header = override_header
            .map(str::to_ascii_lowercase)
            .or_else(|| provider.and_then(Provider::tag_header).map(str::to_string))?;
        Some(Tagging {
            header,
            separator: provider.map_or(",", Provider::separator),
        })
    }

    /// The header's value for an image (originals and variants alike):
    /// under 50 bytes, far below every provider's limit.
    pub fn value(&self, key: &ImageKey) -> String {
        format!(
            "{}{}{}",
            user_tag(&key.user),
            self.separator,
            image_tag(key)
        )
    }
}

/// One request to a provider, built from a batch of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// What a provider needs to be called.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Provider,
    /// CDN_PURGE_API_URL, or the provider's; the whole URL for `webhook`.
    pub base: String,
    /// Zone, service or pull zone id.
    pub id: String,
    pub token: String,
    pub soft: bool,
}

impl Target {
    pub fn new(
        provider: Provider,
        base: Option<String>,
        id: String,
        token: String,
        soft: bool,
    ) -> Target {
        let base = base.unwrap_or_else(|| provider.default_base().to_string());
        Target {
            provider,
            base: base.trim_end_matches('/').to_string(),
            id,
            token,
            soft,
        }
    }

    /// The request that purges `tags` (at most [`Provider::batch`]).
    /// `urls`: the hosted URLs of the images among them, for `webhook`.
    /// The webhook's signature headers are added by the sender.
    pub fn request(&self, tags: &[String], urls: &[String]) -> Request {
        let json = |v: serde_json::Value| v.to_string();
        let mut headers = vec![("content-type", "application/json".to_string())];
        let (url, body) = match self.provider {
            Provider::Cloudflare => {
                headers.push(("authorization", format!("Bearer {}", self.token)));
                (
                    format!("{}/client/v4/zones/{}/purge_cache", self.base, self.id),
                    json(serde_json::json!({ "tags": tags })),
                )
            }
            Provider::Fastly => {
                headers.push(("fastly-key", self.token.clone()));
                headers.push(("accept", "application/json".to_string()));
                if self.soft {
                    headers.push(("fastly-soft-purge", "1".to_string()));
                }
                (
                    format!("{}/service/{}/purge", self.base, self.id),
                    json(serde_json::json!({ "surrogate_keys": tags })),
                )
            }
            Provider::Bunny => {
                headers.push(("accesskey", self.token.clone()));
                (
                    format!("{}/pullzone/{}/purgeCache", self.base, self.id),
                    json(serde_json::json!({ "CacheTag": tags.join(",") })),
                )
            }
            Provider::Webhook => (
                self.base.clone(),
                json(serde_json::json!({ "tags": tags, "urls": urls })),
            ),
        };
        Request { url, headers, body }
    }
}

/// `Retry-After` in seconds; an HTTP date or garbage counts as a minute.
pub fn retry_after_secs(value: Option<&str>) -> u64 {
    match value.map(str::trim) {
        Some(v) => v.parse::<u64>().unwrap_or(60).min(3600),
        None => 60,
    }
}

/// Backoff after a failed attempt: 2, 4, 8 … seconds, at most five minutes.
pub fn backoff_secs(attempts: u32) -> u64 {
    2u64.saturating_pow(attempts.clamp(1, 9)).min(300)
}

#[cfg(test)]
mod tests;
