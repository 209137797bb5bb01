//! What is deleted, and how a delete reaches every part. A delete removes
//! the row first (the image is gone for every replica at that moment, and
//! its object is queued in the same transaction), then the bytes, then the
//! queue entry; this replica's memory is cleared at once, other replicas'
//! within IMAGE_CACHE_REVALIDATE_SECS.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{HostError, Hosting};
use crate::clock::now_ms;
use crate::config::Config;
use crate::ids::{ImageKey, UserId};
use crate::lifecycle::{Candidate, Deletion, Planner, Reason, Rules};
use crate::metrics;
use crate::repo::{Cursor, GoneReason, ImageRecord, ImageState, Removal, Repo};
use crate::store::Store;

/// How long whose a prediction is, and which webhook deliveries were seen,
/// are remembered: Replicate's outputs live an hour, its retries minutes.
const WEBHOOK_MEMORY_MS: u64 = 7 * 24 * 3600 * 1000;

/// Rows read per page while walking the table for a cleanup plan.
const PAGE: u32 = 500;

#[derive(Debug, Default)]
pub struct CleanupReport {
    pub deleted: Vec<Deletion>,
    pub failed_forgotten: u64,
}

/// What a cleanup would delete now, and why: the pure plan over the rows,
/// newest request first. Reads only, so `cleanup --dry-run` and the admin
/// preview change nothing on any backend.
pub async fn cleanup_plan(
    cfg: &Config,
    repo: &dyn Repo,
    store: &dyn Store,
) -> Result<Vec<(ImageRecord, Reason)>, HostError> {
    let mut out = Vec::new();
    walk_cleanup_plan(cfg, repo, store, |row, reason| out.push((row, reason))).await?;
    Ok(out)
}

/// The same plan, handed to `visit` one deletion at a time, so a preview
/// can summarise it without holding every row (the admin page).
pub async fn walk_cleanup_plan(
    cfg: &Config,
    repo: &dyn Repo,
    store: &dyn Store,
    mut visit: impl FnMut(ImageRecord, Reason) + Send,
) -> Result<(), HostError> {
    let rules = Rules::from_config(&cfg.lifecycle, store.volume_bytes());
    let now = now_ms();
    let totals = repo.totals().await?;
    let free = (rules.min_free_bytes > 0)
        .then(|| store.free_bytes())
        .flatten();
    let mut planner = Planner::new(&rules, now, totals.bytes, free);
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = repo.stored_page(cursor.as_ref(), PAGE).await?;
        let full = page.len() == PAGE as usize;
        // Deleting an image frees its variants too (issue 14): one query
        // per page, not per row.
        let keys: Vec<ImageKey> = page.iter().map(|r| r.key.clone()).collect();
        let variant_bytes = repo.variant_bytes(&keys).await?;
        for row in page {
            cursor = Some(Cursor {
                at: row.requested_at,
                key: row.key.clone(),
            });
            let c = Candidate {
                key: row.key.clone(),
                size: row.size + variant_bytes.get(&row.key).copied().unwrap_or(0),
                requested_at: row.requested_at,
                trusted: row.trusted,
            };
            if let Some(reason) = planner.decide(&c) {
                visit(row, reason);
            }
        }
        if !full {
            return Ok(());
        }
    }
}

fn deletion(row: &ImageRecord, reason: Reason) -> Deletion {
    Deletion {
        user_id: row.key.user.to_string(),
        id: row.key.id.to_string(),
        size_bytes: row.size,
        reason,
    }
}

/// Applies the rules once (or only plans them, with `dry_run`), on any
/// repo and store: the proxy's engine, or `permaproxy cleanup` beside it.
/// Returns the report and the rows it deleted.
pub async fn run_cleanup(
    cfg: &Config,
    repo: &dyn Repo,
    store: &dyn Store,
    dry_run: bool,
) -> Result<(CleanupReport, Vec<ImageRecord>), HostError> {
    let plan = cleanup_plan(cfg, repo, store).await?;
    let mut report = CleanupReport::default();
    if dry_run {
        report.deleted = plan.iter().map(|(r, why)| deletion(r, *why)).collect();
        return Ok((report, Vec::new()));
    }
    let mut all_gone = Vec::new();
    for chunk in plan.chunks(200) {
        // One delete per reason, so each tombstone says why its image went.
        let mut gone = Vec::new();
        for reason in [
            Reason::Expired,
            Reason::UserLimit,
            Reason::StorageCap,
            Reason::MinFree,
        ] {
            let keys: Vec<ImageKey> = chunk
                .iter()
                .filter(|(_, why)| *why == reason)
                .map(|(r, _)| r.key.clone())
                .collect();
            if !keys.is_empty() {
                gone.extend(repo.delete_images(&keys, reason.into()).await?);
            }
        }
        for row in gone.iter().filter(|r| r.state == ImageState::Stored) {
            remove_object(repo, store, &row.key.relative_path(row.format)).await;
        }
        remove_variant_objects(repo, store, &gone).await;
        for (row, reason) in chunk {
            if gone.iter().any(|g| g.key == row.key) {
                metrics::get()
                    .cleanup_deleted
                    .with_label_values(&[reason.as_str()])
                    .inc();
                tracing::info!(image = %row.key, reason = reason.as_str(), "deleted by cleanup");
                report.deleted.push(deletion(row, *reason));
            }
        }
        all_gone.extend(gone);
    }
    let lc = &cfg.lifecycle;
    let before = now_ms().saturating_sub(crate::clock::ms(lc.failed_max_age));
    report.failed_forgotten = repo.prune_failed(before, lc.failed_keep).await?;
    repo.prune_webhooks(now_ms().saturating_sub(WEBHOOK_MEMORY_MS))
        .await?;
    let buried_before = now_ms().saturating_sub(crate::clock::ms(lc.tombstone_max_age));
    repo.prune_tombstones(buried_before, lc.tombstone_keep)
        .await?;
    // Hourly view counts serve "the last 24 hours"; a day more is slack.
    let views_before = now_ms().saturating_sub(super::admin_ops::VIEWS_KEPT_MS);
    if let Err(e) = repo.prune_views(views_before).await {
        tracing::warn!(error = %e, "could not prune hourly view counts; the next cleanup tries again");
    }
    Ok((report, all_gone))
}

/// Removes the variant objects that deleting `gone` queued. On failure the
/// entries stay queued for the maintenance loop.
async fn remove_variant_objects(repo: &dyn Repo, store: &dyn Store, gone: &[ImageRecord]) {
    let keys: Vec<ImageKey> = gone
        .iter()
        .filter(|r| r.state == ImageState::Stored)
        .map(|r| r.key.clone())
        .collect();
    if keys.is_empty() {
        return;
    }
    match repo.queued_variant_deletes(&keys).await {
        Ok(paths) => {
            for path in paths {
                remove_object(repo, store, &path).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read queued variant deletes; the sweep will remove them")
        }
    }
}

/// Removes a queued object and its queue entry, only while it is still
/// queued: an image stored again since keeps its bytes (issue 20, finding
/// 14; the rule is in [`Repo::remove_queued`]). On failure the entry stays,
/// and the maintenance loop tries again.
async fn remove_object(repo: &dyn Repo, store: &dyn Store, path: &str) {
    match repo.remove_queued(path, store).await {
        Ok(Removal::Removed) => {}
        Ok(Removal::NotQueued) => {
            tracing::debug!(%path, "not removed: stored again, or removed already")
        }
        Ok(Removal::Failed(e)) => {
            tracing::warn!(%path, error = %e, "could not delete an object; will retry")
        }
        Err(e) => tracing::warn!(%path, error = %e, "could not delete an object; will retry"),
    }
}

impl Hosting {
    /// Applies the lifecycle rules once (or only plans them). One cleanup
    /// at a time per replica; replicas running it at once are harmless,
    /// since deleting a row that is already gone deletes nothing.
    pub async fn cleanup(self: &Arc<Self>, dry_run: bool) -> Result<CleanupReport, HostError> {
        let _one_at_a_time = self.cleanup_lock.lock().await;
        // Requests this replica has seen count before anything is judged
        // old, in a preview too: it must show what a cleanup would do now.
        // (These writes are due within seconds anyway.)
        self.flush_hits().await;
        let (report, gone) =
            run_cleanup(&self.cfg, self.repo.as_ref(), self.store.as_ref(), dry_run).await?;
        self.forget_in_memory(&gone).await;
        Ok(report)
    }

    /// Deletes one image everywhere. `false` when there was none.
    pub async fn delete_image(&self, key: &ImageKey) -> Result<bool, HostError> {
        let gone = self
            .repo
            .delete_images(std::slice::from_ref(key), GoneReason::Deleted)
            .await?;
        self.after_delete(&gone).await;
        Ok(!gone.is_empty())
    }

    /// Deletes all of a user's images, pending and failed ones included. A
    /// download still running for one of them finds its row gone and
    /// removes its own bytes, so nothing of the user comes back.
    /// In pages of [`PAGE`] rows, each its own transaction: memory stays
    /// bounded however many images the user has (finding 15).
    pub async fn delete_user(&self, user: &UserId) -> Result<usize, HostError> {
        let mut deleted = 0;
        loop {
            let gone = self.repo.delete_user_page(user, PAGE).await?;
            if gone.is_empty() {
                return Ok(deleted);
            }
            deleted += gone.len();
            self.after_delete(&gone).await;
        }
    }

    /// The per-user limit, applied as each image is stored. Images handed
    /// out at or after `protect_since` (the response that brought this one,
    /// or newer) are never evicted for it.
    pub(super) async fn enforce_user_limit(&self, key: &ImageKey, protect_since: u64) {
        let limit = self.cfg.lifecycle.per_user_limit;
        if limit == 0 {
            return;
        }
        // This replica's latest requests for the user count now, not at the
        // next flush; other replicas' reach the database within a flush.
        let hits = self.hits.take_user(&key.user);
        if let Err(e) = self.repo.record_hits(&hits).await {
            tracing::warn!(error = %e, "could not write request times before the per-user limit");
            self.hits.restore(hits);
        }
        let gone = match self
            .repo
            .enforce_user_limit(&key.user, limit as u64, protect_since)
            .await
        {
            Ok(gone) => gone,
            Err(e) => {
                tracing::error!(user = %key.user, error = %e, "per-user limit not applied");
                return;
            }
        };
        for row in &gone {
            metrics::get()
                .cleanup_deleted
                .with_label_values(&[Reason::UserLimit.as_str()])
                .inc();
            tracing::info!(image = %row.key, "deleted: over the per-user limit");
        }
        self.after_delete(&gone).await;
    }

    /// The rows are gone: clear memory now, then remove the bytes.
    pub(super) async fn after_delete(&self, gone: &[ImageRecord]) {
        self.forget_in_memory(gone).await;
        let freed = gone
            .iter()
            .filter(|r| r.state == ImageState::Stored)
            .map(|r| r.size)
            .sum();
        self.stored_bytes.sub(freed);
        for row in gone.iter().filter(|r| r.state == ImageState::Stored) {
            self.remove_bytes(&row.key.relative_path(row.format)).await;
        }
        remove_variant_objects(self.repo.as_ref(), self.store.as_ref(), gone).await;
    }

    async fn forget_in_memory(&self, gone: &[ImageRecord]) {
        if gone.is_empty() {
            return;
        }
        self.deletes.fetch_add(1, Ordering::SeqCst);
        for row in gone {
            self.cache.invalidate(&row.key).await;
            self.hits.forget(&row.key);
        }
        let images = gone.iter().map(|r| r.key.clone()).collect();
        self.forget_variants_in_memory(&images).await;
    }

    pub(super) async fn remove_bytes(&self, path: &str) {
        remove_object(self.repo.as_ref(), self.store.as_ref(), path).await;
    }

    /// Removes bytes that no row describes (a download whose row was
    /// deleted meanwhile, the loser of a variant race): queued first, so
    /// the removal follows the one rule, and a sweep finishes it if this
    /// one fails.
    pub(super) async fn discard_bytes(&self, path: &str) {
        if let Err(e) = self.repo.queue_delete(path).await {
            tracing::warn!(%path, error = %e, "could not queue unneeded bytes for removal");
            return;
        }
        self.remove_bytes(path).await;
    }

    /// Finishes deletions a crash or an outage interrupted.
    pub async fn sweep_deleted_objects(&self) {
        let paths = match self.repo.queued_deletes(100).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the queue of deleted objects");
                return;
            }
        };
        self.remove_queued(&paths).await;
    }

    /// The second half of a sweep, on paths read from the queue earlier:
    /// each is re-checked as it is removed, since any of them may have
    /// been stored again in between.
    pub(super) async fn remove_queued(&self, paths: &[String]) {
        for path in paths {
            self.remove_bytes(path).await;
        }
    }
}
