//! What the admin page needs of the metadata beyond the engine's own
//! [`Repo`](super::Repo): the most requested images, pruning their hourly
//! counts, and giving a failed download another chance.
//!
//! A supertrait of `Repo`, in its own file, so these additions stay out of
//! the files every other change touches.

use async_trait::async_trait;

use super::row::{self, to_db, COLUMNS};
use super::views::TopImage;
use super::{ImageRecord, RepoError, SqlRepo};
use crate::ids::ImageKey;

/// A failed row goes back to pending, due now, with no lease and its
/// attempts reset; rows without a source (`data:` URIs) cannot be fetched
/// again.
const RETRY_FAILED: &str = "UPDATE hosted_images SET state = 'pending', due_at = $3, \
     attempts = 0, last_error = NULL, failed_at = NULL, lease_owner = NULL, lease_until = 0 \
     WHERE user_id = $1 AND image_id = $2 AND state = 'failed' AND source_url IS NOT NULL \
     RETURNING ";

#[async_trait]
pub trait AdminRepo: Send + Sync {
    /// Stored images by requests since `since` (counted by whole hours),
    /// most first.
    async fn top_viewed(&self, since: u64, limit: u32) -> Result<Vec<TopImage>, RepoError>;

    /// Forgets hourly view counts older than `before`.
    async fn prune_views(&self, before: u64) -> Result<u64, RepoError>;

    /// Turns a failed row back into a pending one, due at `now`. `None`
    /// when there is no such failed row.
    async fn retry_failed(
        &self,
        key: &ImageKey,
        now: u64,
    ) -> Result<Option<ImageRecord>, RepoError>;
}

#[async_trait]
impl AdminRepo for SqlRepo {
    async fn top_viewed(&self, since: u64, limit: u32) -> Result<Vec<TopImage>, RepoError> {
        self.top_viewed_rows(since, limit).await
    }

    async fn prune_views(&self, before: u64) -> Result<u64, RepoError> {
        self.prune_view_rows(before).await
    }

    async fn retry_failed(
        &self,
        key: &ImageKey,
        now: u64,
    ) -> Result<Option<ImageRecord>, RepoError> {
        let sql = format!("{RETRY_FAILED}{COLUMNS}");
        let mut tx = self.begin().await?;
        let r = sqlx::query(&sql)
            .bind(key.user.as_str())
            .bind(key.id.as_str())
            .bind(to_db(now))
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        r.as_ref().map(row::record).transpose()
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
