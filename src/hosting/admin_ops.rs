//! What the admin page asks of the engine beyond reads: the most requested
//! images, another try for a failed download, an image's private flag, and
//! a read-only cleanup preview from the same pure plan `cleanup --dry-run`
//! uses.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::download::Job;
use super::{HostError, Hosting};
use crate::clock::now_ms;
use crate::ids::ImageKey;
use crate::lifecycle::Reason;
use crate::repo::{ImageRecord, TopImage};

/// Hourly view counts are kept this long: the page shows 24 hours, and a
/// cleanup runs at most a day apart by default.
pub const VIEWS_KEPT_MS: u64 = 48 * 3_600_000;

/// A cleanup that would run now, summarised: totals for everything, rows
/// for the first few.
#[derive(Debug, Default)]
pub struct CleanupPreview {
    pub images: u64,
    pub bytes: u64,
    /// Per reason: (images, bytes).
    pub by_reason: BTreeMap<&'static str, (u64, u64)>,
    /// The first `limit` deletions, in plan order (newest request first).
    pub first: Vec<(ImageRecord, Reason)>,
}

impl Hosting {
    /// Stored images by requests in the last `window_ms`, most first.
    pub async fn top_viewed(&self, window_ms: u64, limit: u32) -> Result<Vec<TopImage>, HostError> {
        let since = now_ms().saturating_sub(window_ms);
        Ok(self.repo.top_viewed(since, limit).await?)
    }

    /// Gives a failed download another chance: the row becomes pending
    /// (due now, no lease, attempts reset), this replica takes its lease
    /// and starts the download without waiting for it. `false` when there
    /// was no failed row to retry.
    pub async fn retry_failed(self: &Arc<Self>, key: &ImageKey) -> Result<bool, HostError> {
        let now = now_ms();
        let Some(row) = self.repo.retry_failed(key, now).await? else {
            return Ok(false);
        };
        let Some(source) = row.source_url.clone() else {
            return Ok(false);
        };
        // If another replica claims it first, that one downloads it; either
        // way the row is pending and due.
        if self
            .repo
            .claim(key, &self.replica_id, now, now + self.lease_ms())
            .await?
        {
            tracing::info!(image = %key, %source, "retrying a failed download (admin)");
            drop(self.ensure(Job {
                key: row.key,
                source,
                prediction_id: row.prediction_id,
                handed_out_at: row.requested_at,
                trusted: row.trusted,
            }));
        }
        Ok(true)
    }

    /// Makes one image private (issue 15) or public again. `false` when
    /// there is no such image. This replica forgets its cached copy at
    /// once; other replicas within the memory revalidation interval.
    pub async fn set_private(&self, key: &ImageKey, private: bool) -> Result<bool, HostError> {
        let found = self.repo.set_private(key, private).await?;
        self.cache.invalidate(key).await;
        Ok(found)
    }

    /// What a cleanup would delete now and why, changing nothing. This
    /// replica's pending request times are written first, as for a dry run,
    /// so an image being requested right now is not shown as expiring.
    pub async fn cleanup_preview(&self, limit: usize) -> Result<CleanupPreview, HostError> {
        self.flush_hits().await;
        let mut p = CleanupPreview::default();
        super::walk_cleanup_plan(
            &self.cfg,
            self.repo.as_ref(),
            self.store.as_ref(),
            |row, reason| {
                p.images += 1;
                p.bytes += row.size;
                let e = p.by_reason.entry(reason.as_str()).or_default();
                e.0 += 1;
                e.1 += row.size;
                if p.first.len() < limit {
                    p.first.push((row, reason));
                }
            },
        )
        .await?;
        Ok(p)
    }
}
