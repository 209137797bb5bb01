//! Sending the CDN purges the database owes. Any replica may send a due
//! purge; each is claimed with a lease first, so two replicas never send
//! the same one, and one that died mid-send leaves it to the next. Batches
//! follow the provider's documented size, a 429 waits its Retry-After, and
//! other failures back off.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{lock, Hosting};
use crate::clock::now_ms;
use crate::metrics;
use crate::purge::{backoff_secs, retry_after_secs, Target};
use crate::repo::QueuedPurge;

/// How long a claimed batch is this replica's: a send times out well before.
const LEASE_MS: u64 = 60_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Batches sent per pass at most: the rest waits for the next pass.
const BATCHES_PER_PASS: usize = 20;

/// The HTTP client and the spacing that keeps to the provider's rate.
pub(super) struct Purger {
    client: reqwest::Client,
    next_send: Mutex<Instant>,
}

impl Purger {
    pub(super) fn new() -> Purger {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Purger {
            client,
            next_send: Mutex::new(Instant::now()),
        }
    }
}

enum Sent {
    Taken,
    RateLimited(u64),
    Failed(String),
}

impl Hosting {
    /// At start: purges this replica had claimed when it stopped (a kill in
    /// the middle of a send) are sent now, not when their lease runs out.
    pub async fn release_own_purges(&self) {
        if self.cfg.cdn.target.is_none() {
            return;
        }
        if let Err(e) = self.repo.release_purges(&self.replica_id).await {
            tracing::warn!(error = %e, "could not release this replica's CDN purge leases; they run out instead");
        }
    }

    /// One pass: claims due purges and sends them, as the provider's rate
    /// allows. Called every second by the maintenance loop.
    pub async fn send_purges(&self) {
        let Some(target) = &self.cfg.cdn.target else {
            return;
        };
        let spacing = Duration::from_secs(60) / self.cfg.cdn.per_minute.max(1);
        for _ in 0..BATCHES_PER_PASS {
            if Instant::now() < *lock(&self.purger.next_send) {
                return;
            }
            let now = now_ms();
            let batch = match self
                .repo
                .claim_purges(
                    &self.replica_id,
                    now,
                    now + LEASE_MS,
                    target.provider.batch() as u32,
                )
                .await
            {
                Ok(b) if b.is_empty() => return,
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim CDN purges; the next pass tries again");
                    return;
                }
            };
            *lock(&self.purger.next_send) = Instant::now() + spacing;
            self.send_batch(target, &batch).await;
        }
    }

    async fn send_batch(&self, target: &Target, batch: &[QueuedPurge]) {
        let tags: Vec<String> = batch.iter().map(|p| p.tag.clone()).collect();
        let provider = target.provider.as_str();
        let count = |outcome: &str| {
            metrics::get()
                .cdn_purges
                .with_label_values(&[provider, outcome])
                .inc_by(tags.len() as u64)
        };
        let (due, error) = match self.send_request(target, batch, &tags).await {
            Sent::Taken => {
                count("sent");
                tracing::info!(provider, tags = tags.len(), "CDN purge sent");
                if let Err(e) = self.repo.finish_purges(&tags).await {
                    // Sent again after the lease: a purge twice is harmless.
                    tracing::warn!(error = %e, "CDN purge sent, but not yet forgotten");
                }
                return;
            }
            Sent::RateLimited(secs) => {
                count("rate_limited");
                *lock(&self.purger.next_send) = Instant::now() + Duration::from_secs(secs);
                (
                    now_ms() + secs * 1000,
                    format!("429: rate limited for {secs} s"),
                )
            }
            Sent::Failed(why) => {
                count("retried");
                let attempts = batch.iter().map(|p| p.attempts).max().unwrap_or(1);
                (now_ms() + backoff_secs(attempts) * 1000, why)
            }
        };
        tracing::warn!(provider, tags = tags.len(), error = %error, "CDN purge not taken; will retry");
        if let Err(e) = self.repo.retry_purges(&tags, due, &error).await {
            tracing::warn!(error = %e, "could not reschedule CDN purges; their lease runs out instead");
        }
    }

    async fn send_request(&self, target: &Target, batch: &[QueuedPurge], tags: &[String]) -> Sent {
        let base = self.cfg.public_base_url.as_deref().unwrap_or("");
        let urls: Vec<String> = batch
            .iter()
            .filter_map(|p| p.path.as_ref().map(|path| format!("{base}{path}")))
            .collect();
        let req = target.request(tags, &urls);
        let mut rb = self.purger.client.post(&req.url);
        for (k, v) in &req.headers {
            rb = rb.header(*k, v);
        }
        if let Some(secret) = &self.cfg.cdn.webhook_secret {
            let ts = (now_ms() / 1000).to_string();
            let id = format!(
                "msg_{}",
                &crate::ids::sha256_hex(format!("{ts}{}", tags.join(",")).as_bytes())[..24]
            );
            rb = rb
                .header(
                    "webhook-signature",
                    secret.sign(&id, &ts, req.body.as_bytes()),
                )
                .header("webhook-id", id)
                .header("webhook-timestamp", ts);
        }
        match rb.body(req.body).send().await {
            Ok(r) if r.status().is_success() => Sent::Taken,
            Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                let after = r.headers().get("retry-after").and_then(|v| v.to_str().ok());
                Sent::RateLimited(retry_after_secs(after))
            }
            Ok(r) => Sent::Failed(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Sent::Failed(format!("request failed: {e}")),
        }
    }

    /// The queue's depth and age, for the gauges and the admin page.
    pub(super) async fn publish_purge_gauges(&self) {
        if self.cfg.cdn.target.is_none() {
            return;
        }
        match self.repo.purge_stats().await {
            Ok(s) => {
                let m = metrics::get();
                m.cdn_purge_queue
                    .set(i64::try_from(s.queued).unwrap_or(i64::MAX));
                let age = s
                    .oldest_queued_at
                    .map_or(0, |at| now_ms().saturating_sub(at) / 1000);
                m.cdn_purge_oldest_seconds
                    .set(i64::try_from(age).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "could not read the CDN purge queue"),
        }
    }

    pub async fn purge_stats(&self) -> Option<crate::repo::PurgeStats> {
        self.cfg.cdn.target.as_ref()?;
        self.repo.purge_stats().await.ok()
    }
}
