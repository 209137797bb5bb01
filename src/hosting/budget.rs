//! The byte bounds, IMAGE_STORAGE_MAX_BYTES and the free-space floor,
//! applied as each image is stored. The cleanup job applies them too, but it
//! runs daily by default: without this a volume fills in between, and with
//! client-claimed ids the per-user limit bounds nothing, so the disk is the
//! only bound there is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{lock, Hosting};
use crate::ids::ImageKey;
use crate::lifecycle::{bytes_to_free, Reason, Rules};
use crate::metrics;
use crate::repo::GoneReason;

/// Rows read per eviction round, oldest request first.
const PAGE: u32 = 50;
/// A bound on rounds for one stored image: a delete that keeps failing must
/// not spin; the next image stored, or the cleanup job, tries again.
const MAX_ROUNDS: usize = 20;
/// How long the database's byte total is trusted before it is read again.
/// Stores and evictions in between adjust it, so the cap holds between
/// reads; other replicas' stores reach it at the next read.
const TOTAL_FRESH_FOR: Duration = Duration::from_secs(30);

/// The stored byte total as last read, adjusted since.
#[derive(Default)]
pub(super) struct StoredBytes(Mutex<Option<(Instant, u64)>>);

impl StoredBytes {
    pub(super) fn add(&self, bytes: u64) {
        if let Some((_, total)) = lock(&self.0).as_mut() {
            *total = total.saturating_add(bytes);
        }
    }

    pub(super) fn sub(&self, bytes: u64) {
        if let Some((_, total)) = lock(&self.0).as_mut() {
            *total = total.saturating_sub(bytes);
        }
    }

    fn fresh(&self) -> Option<u64> {
        lock(&self.0)
            .filter(|(at, _)| at.elapsed() < TOTAL_FRESH_FOR)
            .map(|(_, total)| total)
    }

    fn set(&self, total: u64) {
        *lock(&self.0) = Some((Instant::now(), total));
    }
}

impl Hosting {
    /// Evicts the least recently requested stored images until both bounds
    /// hold, never one requested or handed out at or after `protect_since`
    /// (the response that brought the image just stored, or newer).
    pub(super) async fn enforce_byte_budget(&self, protect_since: u64) {
        let rules = Rules::from_config(&self.cfg.lifecycle, self.store.volume_bytes());
        if rules.max_bytes.is_none() && rules.min_free_bytes == 0 {
            return;
        }
        // One at a time: two stores evicting at once would each free the
        // whole deficit.
        let _one_at_a_time = self.budget_lock.lock().await;
        for round in 0..MAX_ROUNDS {
            let stored = match rules.max_bytes {
                Some(_) => match self.stored_total().await {
                    Some(t) => t,
                    None => return,
                },
                None => 0,
            };
            let need = bytes_to_free(&rules, stored, self.store.free_bytes());
            if need == 0 {
                return;
            }
            if round == 0 {
                // This replica's latest requests count before anything is
                // judged least recently requested.
                self.flush_hits().await;
            }
            let reason = if rules.max_bytes.is_some_and(|cap| stored > cap) {
                Reason::StorageCap
            } else {
                Reason::MinFree
            };
            if !self.evict_oldest(need, protect_since, reason).await {
                return;
            }
        }
    }

    async fn stored_total(&self) -> Option<u64> {
        if let Some(t) = self.stored_bytes.fresh() {
            return Some(t);
        }
        match self.repo.totals().await {
            Ok(t) => {
                self.stored_bytes.set(t.bytes);
                Some(t.bytes)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the stored byte total; the cap is checked again at the next store");
                None
            }
        }
    }

    /// Deletes the oldest images until `need` bytes (variants included)
    /// are freed or none is left to take. `false` when nothing was freed.
    async fn evict_oldest(&self, need: u64, protect_since: u64, reason: Reason) -> bool {
        let rows = match self.repo.least_recent_stored(protect_since, PAGE).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not read images to evict for the disk bound");
                return false;
            }
        };
        if rows.is_empty() {
            tracing::warn!(
                need,
                reason = reason.as_str(),
                "disk bound not met, and every image left was requested by a response still in flight"
            );
            return false;
        }
        let keys: Vec<ImageKey> = rows.iter().map(|r| r.key.clone()).collect();
        let variant_bytes = self.repo.variant_bytes(&keys).await.unwrap_or_default();
        let mut chosen = Vec::new();
        let mut freed = 0u64;
        for row in &rows {
            if freed >= need {
                break;
            }
            freed += row.size + variant_bytes.get(&row.key).copied().unwrap_or(0);
            chosen.push(row.key.clone());
        }
        let gone = match self
            .repo
            .delete_images(&chosen, GoneReason::StorageCap)
            .await
        {
            Ok(gone) => gone,
            Err(e) => {
                tracing::error!(error = %e, "could not evict images for the disk bound");
                return false;
            }
        };
        for row in &gone {
            metrics::get()
                .cleanup_deleted
                .with_label_values(&[reason.as_str()])
                .inc();
            tracing::info!(image = %row.key, reason = reason.as_str(), "deleted as an image was stored: over the disk bound");
        }
        self.after_delete(&gone).await;
        !gone.is_empty()
    }
}
