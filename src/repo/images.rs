//! Writing rows as images move through their life: handed out, stored,
//! failed, postponed, requested.

use super::row::{self, opt_text, text, to_db, COLUMNS};
use super::{HandOut, Hit, ImageRecord, Marked, RepoError, SqlRepo};
use crate::ids::ImageKey;
use crate::store::ImageMeta;

/// A new row is pending; a row already there keeps its state, except that a
/// failed one is tried again. Either way it counts as requested now. The
/// lease goes to `owner` when it is free or has run out. Every SET
/// expression sees the row as it was before this statement.
const HAND_OUT: &str = "INSERT INTO hosted_images \
     (user_id, image_id, state, format, source_url, prediction_id, created_at, requested_at, \
      due_at, lease_owner, lease_until, owner_trusted) \
     VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6, $7, $8, $9, $10) \
     ON CONFLICT (user_id, image_id) DO UPDATE SET \
       owner_trusted = CASE WHEN excluded.owner_trusted = 1 THEN 1 \
                       ELSE hosted_images.owner_trusted END, \
       requested_at = CASE WHEN hosted_images.requested_at < excluded.requested_at \
                      THEN excluded.requested_at ELSE hosted_images.requested_at END, \
       prediction_id = COALESCE(hosted_images.prediction_id, excluded.prediction_id), \
       state = CASE WHEN hosted_images.state = 'failed' THEN 'pending' \
               ELSE hosted_images.state END, \
       due_at = CASE WHEN hosted_images.state = 'failed' THEN excluded.due_at \
                ELSE hosted_images.due_at END, \
       attempts = CASE WHEN hosted_images.state = 'failed' THEN 0 \
                  ELSE hosted_images.attempts END, \
       lease_owner = CASE WHEN hosted_images.state <> 'stored' AND excluded.lease_owner IS NOT NULL \
                       AND hosted_images.lease_until <= excluded.created_at \
                     THEN excluded.lease_owner ELSE hosted_images.lease_owner END, \
       lease_until = CASE WHEN hosted_images.state <> 'stored' AND excluded.lease_owner IS NOT NULL \
                       AND hosted_images.lease_until <= excluded.created_at \
                     THEN excluded.lease_until ELSE hosted_images.lease_until END \
     RETURNING ";

/// Being stored counts as a request, so every image lives at least
/// IMAGE_MAX_AGE_DAYS after its bytes arrived.
const MARK_STORED: &str = "UPDATE hosted_images SET state = 'stored', format = $3, \
     size_bytes = $4, sha256 = $5, width = $6, height = $7, stored_at = $8, last_error = NULL, \
     failed_at = NULL, lease_owner = NULL, lease_until = 0, \
     requested_at = CASE WHEN requested_at < $8 THEN $8 ELSE requested_at END \
     WHERE user_id = $1 AND image_id = $2 RETURNING requested_at, private";

const UPSERT_STORED: &str = "INSERT INTO hosted_images \
     (user_id, image_id, state, format, size_bytes, sha256, source_url, prediction_id, \
      created_at, stored_at, requested_at, owner_trusted) \
     VALUES ($1, $2, 'stored', $3, $4, $5, $6, $7, $8, $8, $9, $10) \
     ON CONFLICT (user_id, image_id) DO UPDATE SET state = 'stored', format = excluded.format, \
       owner_trusted = CASE WHEN excluded.owner_trusted = 1 THEN 1 \
                       ELSE hosted_images.owner_trusted END, \
       size_bytes = excluded.size_bytes, sha256 = excluded.sha256, \
       source_url = COALESCE(hosted_images.source_url, excluded.source_url), \
       prediction_id = COALESCE(hosted_images.prediction_id, excluded.prediction_id), \
       stored_at = excluded.stored_at, last_error = NULL, failed_at = NULL, \
       lease_owner = NULL, lease_until = 0, \
       requested_at = CASE WHEN hosted_images.requested_at < excluded.requested_at \
                      THEN excluded.requested_at ELSE hosted_images.requested_at END \
     RETURNING private";

const UPSERT_RECORD: &str = "INSERT INTO hosted_images \
     (user_id, image_id, state, format, size_bytes, sha256, source_url, prediction_id, \
      created_at, stored_at, requested_at, attempts, last_error, failed_at, due_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (user_id, image_id) DO NOTHING";

const RECORD_HIT: &str = "UPDATE hosted_images SET \
     requested_at = CASE WHEN requested_at < $3 THEN $3 ELSE requested_at END, \
     views = views + $4 WHERE user_id = $1 AND image_id = $2";

impl SqlRepo {
    pub(super) async fn hand_out_rows(&self, b: &HandOut) -> Result<Vec<ImageRecord>, RepoError> {
        let mut tx = self.begin().await?;
        let out = hand_out_in(&mut tx, b).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn get_row(&self, key: &ImageKey) -> Result<Option<ImageRecord>, RepoError> {
        let sql =
            format!("SELECT {COLUMNS} FROM hosted_images WHERE user_id = $1 AND image_id = $2");
        let row = sqlx::query(&sql)
            .bind(key.user.as_str())
            .bind(key.id.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(row::record).transpose()
    }

    pub(super) async fn mark_stored_row(
        &self,
        m: &ImageMeta,
        dims: Option<(u32, u32)>,
    ) -> Result<Option<Marked>, RepoError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(MARK_STORED)
            .bind(m.key.user.as_str())
            .bind(m.key.id.as_str())
            .bind(m.format.ext())
            .bind(to_db(m.size))
            .bind(m.sha256.as_str())
            .bind(dims.map(|d| i64::from(d.0)))
            .bind(dims.map(|d| i64::from(d.1)))
            .bind(to_db(m.created_at))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        // An earlier delete of this image may still be queued: the bytes
        // just stored must not be swept by it.
        dequeue(&mut tx, &m.relative_path()).await?;
        tx.commit().await?;
        Ok(Some(Marked {
            requested_at: row::from_db(sqlx::Row::try_get(&r, "requested_at")?),
            private: sqlx::Row::try_get::<i64, _>(&r, "private")? != 0,
        }))
    }

    pub(super) async fn upsert_stored_row(
        &self,
        m: &ImageMeta,
        requested_at: u64,
        trusted: bool,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin().await?;
        let r = sqlx::query(UPSERT_STORED)
            .bind(m.key.user.as_str())
            .bind(m.key.id.as_str())
            .bind(m.format.ext())
            .bind(to_db(m.size))
            .bind(m.sha256.as_str())
            .bind(opt_text(m.source_url.as_deref()))
            .bind(opt_text(m.prediction_id.as_deref()))
            .bind(to_db(m.created_at))
            .bind(to_db(requested_at.max(m.created_at)))
            .bind(i64::from(trusted))
            .fetch_one(&mut *tx)
            .await?;
        dequeue(&mut tx, &m.relative_path()).await?;
        tx.commit().await?;
        Ok(sqlx::Row::try_get::<i64, _>(&r, "private")? != 0)
    }

    /// Imports a record as an older store kept it; a row already in the
    /// database wins, so running an import twice changes nothing.
    pub(super) async fn upsert_record_row(&self, r: &ImageRecord) -> Result<(), RepoError> {
        sqlx::query(UPSERT_RECORD)
            .bind(r.key.user.as_str())
            .bind(r.key.id.as_str())
            .bind(r.state.as_str())
            .bind(r.format.ext())
            .bind(to_db(r.size))
            .bind(r.sha256.as_str())
            .bind(opt_text(r.source_url.as_deref()))
            .bind(opt_text(r.prediction_id.as_deref()))
            .bind(to_db(r.created_at))
            .bind(r.stored_at.map(to_db))
            .bind(to_db(r.requested_at))
            .bind(i64::from(r.attempts))
            .bind(opt_text(r.last_error.as_deref()))
            .bind(r.failed_at.map(to_db))
            .bind(to_db(r.due_at))
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub(super) async fn mark_failed_row(
        &self,
        key: &ImageKey,
        reason: &str,
        now: u64,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "UPDATE hosted_images SET state = 'failed', last_error = $3, failed_at = $4, \
             attempts = attempts + 1, lease_owner = NULL, lease_until = 0 \
             WHERE user_id = $1 AND image_id = $2 AND state = 'pending'",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(text(reason))
        .bind(to_db(now))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn postpone_row(
        &self,
        key: &ImageKey,
        reason: &str,
        due_at: u64,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "UPDATE hosted_images SET last_error = $3, due_at = $4, attempts = attempts + 1, \
             lease_owner = NULL, lease_until = 0 \
             WHERE user_id = $1 AND image_id = $2 AND state = 'pending'",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(text(reason))
        .bind(to_db(due_at))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// A stored row whose object turned out lost (finding 13) becomes
    /// pending again, due now, when it has a source to download from and
    /// still describes the bytes that were found wrong (`sha256`), so two
    /// requests finding the same loss requeue it once.
    pub(super) async fn requeue_lost_row(
        &self,
        key: &ImageKey,
        sha256: &str,
        now: u64,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE hosted_images SET state = 'pending', due_at = $4, attempts = 0, \
             lease_owner = NULL, lease_until = 0, \
             last_error = 'stored object lost (wrong length); downloading again' \
             WHERE user_id = $1 AND image_id = $2 AND state = 'stored' AND sha256 = $3 \
             AND source_url IS NOT NULL",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(sha256)
        .bind(to_db(now))
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(done > 0)
    }

    /// One transaction for the whole batch: request times are flushed every
    /// few seconds, never once per request.
    pub(super) async fn record_hit_rows(&self, hits: &[Hit]) -> Result<(), RepoError> {
        if hits.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for h in hits {
            let done = sqlx::query(RECORD_HIT)
                .bind(h.key.user.as_str())
                .bind(h.key.id.as_str())
                .bind(to_db(h.last_ms))
                .bind(to_db(h.count))
                .execute(&mut *tx)
                .await?;
            // The hourly counts behind the admin page's top images; only
            // for rows that still exist.
            if done.rows_affected() > 0 {
                super::views::record_hour(&mut tx, h).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn dequeue(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    path: &str,
) -> Result<(), RepoError> {
    sqlx::query("DELETE FROM deleted_objects WHERE path = $1")
        .bind(path)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The rows of one hand-out, inside the caller's transaction.
pub(super) async fn hand_out_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    b: &HandOut,
) -> Result<Vec<ImageRecord>, RepoError> {
    let sql = format!("{HAND_OUT}{COLUMNS}");
    let mut out = Vec::with_capacity(b.images.len());
    for img in &b.images {
        let row = sqlx::query(&sql)
            .bind(img.key.user.as_str())
            .bind(img.key.id.as_str())
            .bind(img.format.ext())
            .bind(text(&img.source_url))
            .bind(opt_text(b.prediction_id.as_deref()))
            .bind(to_db(b.now))
            .bind(to_db(b.due_at))
            .bind(b.owner.as_deref())
            .bind(to_db(if b.owner.is_some() { b.lease_until } else { 0 }))
            .bind(i64::from(b.trusted))
            .fetch_one(&mut **tx)
            .await?;
        out.push(row::record(&row)?);
    }
    Ok(out)
}
