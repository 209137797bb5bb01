//! Deleting rows. A row goes in the same transaction that queues its object
//! in `deleted_objects`, together with its variants' rows and objects; the
//! engine removes the bytes afterwards and then the queue entries, so a
//! crash in between leaks nothing.

use sqlx::{Any, Transaction};

use super::leases::{key_list, KEYS_PER_STATEMENT};
use super::row::{self, to_db, COLUMNS};
use super::tombstones::GoneReason;
use super::{ImageRecord, ImageState, RepoError, SqlRepo};
use crate::ids::{ImageKey, UserId};
use crate::store::Store;

/// Past any real per-user count; SQLite needs a LIMIT to take an OFFSET.
const NO_LIMIT: i64 = 1 << 40;

/// A user's stored images past the `$3` most recently requested. Read from
/// `hosted_images_user_state_requested`: this runs for every image stored.
pub(super) const USER_LIMIT_VICTIMS: &str = "SELECT user_id, image_id, requested_at \
     FROM hosted_images WHERE user_id = $1 AND state = 'stored' AND owner_trusted = 1 \
     ORDER BY requested_at DESC, image_id ASC LIMIT $2 OFFSET $3";

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

/// Queues one object for deletion, in the caller's transaction.
async fn queue_path(tx: &mut Transaction<'static, Any>, path: &str) -> Result<(), RepoError> {
    sqlx::query(
        "INSERT INTO deleted_objects (path, queued_at) VALUES ($1, $2) \
         ON CONFLICT (path) DO NOTHING",
    )
    .bind(path)
    .bind(to_db(now_ms()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records the deletion of `rows`, already removed from `hosted_images` in
/// the caller's transaction: queues their stored objects, deletes their
/// variants (queueing those objects too) and leaves a tombstone saying
/// why. Every deletion of an image row goes through here, so whatever a
/// deletion must also do (a CDN purge, say) is added in one place and
/// commits or rolls back with the delete. Pending rows have no bytes yet:
/// a download that finishes for a deleted row removes its own.
pub(super) async fn record_deletion(
    tx: &mut Transaction<'static, Any>,
    rows: &[ImageRecord],
    reason: GoneReason,
    purge: bool,
) -> Result<(), RepoError> {
    for r in rows.iter().filter(|r| r.state == ImageState::Stored) {
        queue_path(tx, &r.key.relative_path(r.format)).await?;
    }
    let gone: Vec<ImageKey> = rows.iter().map(|r| r.key.clone()).collect();
    super::variants::delete_of_images(tx, &gone).await?;
    if purge {
        super::purges::owe_images(tx, rows).await?;
    }
    super::tombstones::bury(tx, rows, reason, now_ms()).await
}

/// Deletes the rows of `keys` with everything they owe (see
/// [`record_deletion`]); `purge`: a CDN purge of each image's tag.
async fn delete_keys(
    tx: &mut Transaction<'static, Any>,
    keys: &[ImageKey],
    reason: GoneReason,
    purge: bool,
) -> Result<Vec<ImageRecord>, RepoError> {
    let mut out = Vec::new();
    for chunk in keys.chunks(KEYS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM hosted_images WHERE {} RETURNING {COLUMNS}",
            key_list(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(k.user.as_str()).bind(k.id.as_str());
        }
        let rows = q.fetch_all(&mut **tx).await?;
        out.extend(row::records(&rows)?);
    }
    record_deletion(tx, &out, reason, purge).await?;
    Ok(out)
}

/// What became of one queued removal.
#[derive(Debug)]
pub enum Removal {
    /// The bytes are gone and so is the queue entry.
    Removed,
    /// Not queued (any more): the path was stored again since (the rule
    /// `mark_stored` applies), or another remover finished it. Nothing
    /// was touched.
    NotQueued,
    /// The store refused or timed out; the entry stays for the next sweep.
    Failed(String),
}

/// The longest a removal holds its queue entry locked: a writer storing the
/// same path waits for it (see [`SqlRepo::remove_queued_object`]), and on
/// SQLite every write does.
const REMOVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl SqlRepo {
    pub(super) async fn delete_image_rows(
        &self,
        keys: &[ImageKey],
        reason: GoneReason,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let mut tx = self.begin().await?;
        let out = delete_keys(&mut tx, keys, reason, self.purge).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Deletes up to `limit` of the user's images (any state), in one
    /// transaction holding the user's lock; the caller repeats until none
    /// are left, so memory is bounded by the page, not by the user.
    pub(super) async fn delete_user_page_rows(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        let rows = sqlx::query(
            "SELECT user_id, image_id FROM hosted_images WHERE user_id = $1 \
             ORDER BY image_id LIMIT $2",
        )
        .bind(user.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let keys = rows.iter().map(row::key).collect::<Result<Vec<_>, _>>()?;
        // One user tag purges them all at the edge.
        let out = delete_keys(&mut tx, &keys, GoneReason::Deleted, false).await?;
        if self.purge && !out.is_empty() {
            super::purges::owe_user(&mut tx, user).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The user's stored images past the `limit` most recently requested,
    /// minus those requested at or after `protect_since` (the response that
    /// triggered this, or anything newer), deleted in one transaction that
    /// holds the user's lock: two replicas storing for one user at once
    /// never evict more than the limit asks.
    pub(super) async fn enforce_user_limit_rows(
        &self,
        user: &UserId,
        limit: u64,
        protect_since: u64,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        let rows = sqlx::query(USER_LIMIT_VICTIMS)
            .bind(user.as_str())
            .bind(NO_LIMIT)
            .bind(to_db(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut victims = Vec::new();
        for r in &rows {
            let at: i64 = sqlx::Row::try_get(r, "requested_at")?;
            if row::from_db(at) < protect_since {
                victims.push(row::key(r)?);
            }
        }
        let out = if victims.is_empty() {
            Vec::new()
        } else {
            delete_keys(&mut tx, &victims, GoneReason::UserLimit, self.purge).await?
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn lock_user(
        &self,
        tx: &mut Transaction<'static, Any>,
        user: &UserId,
    ) -> Result<(), RepoError> {
        if let Some(lock) = self.dialect.lock_user() {
            sqlx::query(lock)
                .bind(user.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn queued_delete_paths(&self, limit: u32) -> Result<Vec<String>, RepoError> {
        let rows = sqlx::query("SELECT path FROM deleted_objects ORDER BY queued_at LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok(sqlx::Row::try_get::<String, _>(r, "path")?))
            .collect()
    }

    /// Queues one object that no row describes (a download whose row was
    /// deleted meanwhile, the loser of a variant race), so that it is
    /// removed under the same rule as every other queued object.
    pub(super) async fn queue_object_path(&self, path: &str) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        queue_path(&mut tx, path).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a queued object, only while it is still queued. The queue
    /// entry is taken (deleted, uncommitted) before the store is asked and
    /// released (committed) after, so the check and the removal are one
    /// step to any writer: a writer about to store the same path dequeues
    /// it first ([`super::Repo::forget_queued_delete`], then `put`, then
    /// `mark_stored`), and that dequeue either ran before (nothing is
    /// queued: nothing is removed) or waits for this commit (the old bytes
    /// are gone before the new ones are written). Either way a live row's
    /// bytes are never removed.
    pub(super) async fn remove_queued_object(
        &self,
        path: &str,
        store: &dyn Store,
    ) -> Result<Removal, RepoError> {
        let mut tx = self.begin().await?;
        let claimed = sqlx::query("DELETE FROM deleted_objects WHERE path = $1")
            .bind(path)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(Removal::NotQueued);
        }
        let outcome = match tokio::time::timeout(REMOVE_TIMEOUT, store.delete(path)).await {
            Ok(Ok(())) => Removal::Removed,
            Ok(Err(e)) => Removal::Failed(e.to_string()),
            Err(_) => Removal::Failed("the store did not answer in time".into()),
        };
        match outcome {
            Removal::Removed => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok(outcome)
    }

    pub(super) async fn forget_queued_path(&self, path: &str) -> Result<(), RepoError> {
        sqlx::query("DELETE FROM deleted_objects WHERE path = $1")
            .bind(path)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
