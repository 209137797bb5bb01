//! What runs in the background, on every replica: taking over pending
//! downloads whose replica died, renewing this replica's leases, writing
//! request times, dropping images deleted elsewhere from memory, finishing
//! interrupted deletes, and the gauges.

use std::sync::Arc;

use super::download::Job;
use super::Hosting;
use crate::clock::now_ms;
use crate::ids::ImageKey;
use crate::metrics;

/// Pending rows claimed per statement.
const CLAIM_BATCH: u32 = 64;

impl Hosting {
    /// Claims pending rows that are due and whose lease ran out (and, with
    /// `own_too`, this replica's own rows left by the process it replaces)
    /// and downloads them. Returns how many downloads it started.
    pub async fn take_over_pending(self: &Arc<Self>, own_too: bool) -> usize {
        let mut started = 0;
        loop {
            let now = now_ms();
            let rows = match self
                .repo
                .claim_due(
                    &self.replica_id,
                    now,
                    now + self.lease_ms(),
                    CLAIM_BATCH,
                    own_too,
                )
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim pending downloads");
                    return started;
                }
            };
            let full = rows.len() == CLAIM_BATCH as usize;
            for r in rows {
                let Some(source) = r.source_url.clone() else {
                    continue;
                };
                if self.in_flight(&r.key) {
                    continue;
                }
                tracing::info!(image = %r.key, %source, attempts = r.attempts, "downloading a pending image");
                drop(self.ensure(Job {
                    key: r.key,
                    source,
                    prediction_id: r.prediction_id,
                    handed_out_at: r.requested_at,
                    trusted: r.trusted,
                }));
                started += 1;
            }
            if !full {
                return started;
            }
        }
    }

    /// Keeps this replica's leases alive while its downloads run.
    pub async fn renew_leases(&self) {
        let keys = self.in_flight_keys();
        if keys.is_empty() {
            return;
        }
        let until = now_ms() + self.lease_ms();
        if let Err(e) = self.repo.renew_leases(&self.replica_id, &keys, until).await {
            tracing::warn!(error = %e, "could not renew download leases");
        }
    }

    /// Writes the request times and view counts gathered since the last
    /// flush, in one transaction.
    pub async fn flush_hits(&self) {
        self.flush_variant_hits().await;
        let hits = self.hits.take();
        if hits.is_empty() {
            return;
        }
        if let Err(e) = self.repo.record_hits(&hits).await {
            tracing::warn!(error = %e, "could not write request times; keeping them for the next flush");
            self.hits.restore(hits);
        }
    }

    /// Drops from memory every image whose row is gone (deleted by another
    /// replica, or by `permaproxy cleanup`) or whose private flag changed.
    /// One indexed query per couple of hundred cached images; the bucket is never asked.
    pub async fn drop_deleted_from_memory(&self) {
        // Variants are checked by their image: they are deleted with it.
        let entries = self.cache.entries();
        let mut images: std::collections::HashSet<ImageKey> =
            entries.iter().map(|(_, image)| image.clone()).collect();
        images.extend(self.variant_images_in_memory());
        if images.is_empty() {
            return;
        }
        let images: Vec<ImageKey> = images.into_iter().collect();
        match self.repo.existing(&images).await {
            Ok(alive) => {
                for (k, image) in &entries {
                    // Gone, or made private (or public) elsewhere: the next
                    // request reads the row again. A gone image's variants
                    // go with forget_variants_in_memory below.
                    let stale = match (alive.get(image), self.cache.peek(k).await) {
                        (Some(private), Some(hit)) => k == image && hit.meta.private != *private,
                        (None, _) => k == image,
                        (Some(_), None) => false,
                    };
                    if stale {
                        self.cache.invalidate(k).await;
                    }
                }
                let dead = images
                    .into_iter()
                    .filter(|i| !alive.contains_key(i))
                    .collect();
                self.forget_variants_in_memory(&dead).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not check cached images against the database")
            }
        }
    }

    pub async fn publish_gauges(&self) {
        let m = metrics::get();
        match self.repo.totals().await {
            Ok(t) => {
                m.stored_images
                    .set(i64::try_from(t.images).unwrap_or(i64::MAX));
                m.stored_bytes
                    .set(i64::try_from(t.bytes).unwrap_or(i64::MAX));
                m.pending_downloads
                    .set(i64::try_from(t.pending).unwrap_or(i64::MAX));
                m.failed_downloads
                    .set(i64::try_from(t.failed).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "could not read totals for the gauges"),
        }
        if let Some(free) = self.store.free_bytes() {
            m.storage_free_bytes
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        self.publish_purge_gauges().await;
    }

    /// Everything a stopping process should leave behind: request times.
    pub async fn shutdown(&self) {
        self.flush_hits().await;
    }
}
