//! Deleting rows. A row goes in the same transaction that queues its object
//! in `deleted_objects`, together with its variants' rows and objects; the
//! engine removes the bytes afterwards and then the queue entries, so a
//! crash in between leaks nothing.

use sqlx::{Any, Transaction};

use super::leases::{key_list, KEYS_PER_STATEMENT};
use super::row::{self, to_db, COLUMNS};
use super::{ImageRecord, ImageState, RepoError, SqlRepo};
use crate::ids::{ImageKey, UserId};

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

/// Queues the stored objects of `rows` for deletion. Pending rows have no
/// bytes yet: a download that finishes for a deleted row removes its own.
async fn queue_objects(
    tx: &mut Transaction<'static, Any>,
    rows: &[ImageRecord],
) -> Result<(), RepoError> {
    for r in rows.iter().filter(|r| r.state == ImageState::Stored) {
        sqlx::query(
            "INSERT INTO deleted_objects (path, queued_at) VALUES ($1, $2) \
             ON CONFLICT (path) DO NOTHING",
        )
        .bind(r.key.relative_path(r.format))
        .bind(to_db(now_ms()))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Deletes the rows of `keys` with everything they owe: their objects
/// queued for removal, their variants, and (with `purge`) their CDN purges.
async fn delete_keys(
    tx: &mut Transaction<'static, Any>,
    keys: &[ImageKey],
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
    queue_objects(tx, &out).await?;
    let gone: Vec<ImageKey> = out.iter().map(|r| r.key.clone()).collect();
    super::variants::delete_of_images(tx, &gone).await?;
    if purge {
        super::purges::owe_images(tx, &out).await?;
    }
    Ok(out)
}

impl SqlRepo {
    pub(super) async fn delete_image_rows(
        &self,
        keys: &[ImageKey],
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let mut tx = self.begin().await?;
        let out = delete_keys(&mut tx, keys, self.purge).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn delete_user_rows(
        &self,
        user: &UserId,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let sql = format!("DELETE FROM hosted_images WHERE user_id = $1 RETURNING {COLUMNS}");
        let mut tx = self.begin().await?;
        self.lock_user(&mut tx, user).await?;
        let rows = sqlx::query(&sql)
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let out = row::records(&rows)?;
        queue_objects(&mut tx, &out).await?;
        super::variants::delete_of_user(&mut tx, user).await?;
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
            delete_keys(&mut tx, &victims, self.purge).await?
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

    pub(super) async fn forget_queued_path(&self, path: &str) -> Result<(), RepoError> {
        sqlx::query("DELETE FROM deleted_objects WHERE path = $1")
            .bind(path)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
