//! The queue of CDN purges owed: written beside the deletes that owe them,
//! claimed with a lease by whichever replica sends next, removed when sent.

use sqlx::{Any, Row, Transaction};

use super::row::{from_db, opt_text, text, to_db};
use super::{ImageRecord, PurgeStats, QueuedPurge, RepoError, SqlRepo};
use crate::ids::{ImageKey, UserId};
use crate::purge::{image_tag, user_tag};

const ENQUEUE: &str =
    "INSERT INTO cdn_purges (tag, path, queued_at, due_at) VALUES ($1, $2, $3, $3) \
     ON CONFLICT (tag) DO NOTHING";

/// Whoever claims first sends: the lease is re-checked in the outer WHERE,
/// so on Postgres a replica that lost the race updates nothing.
const CLAIM: &str =
    "UPDATE cdn_purges SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 \
     WHERE due_at <= $3 AND lease_until <= $3 AND tag IN (SELECT tag FROM cdn_purges \
       WHERE due_at <= $3 AND lease_until <= $3 ORDER BY queued_at, tag LIMIT $4) \
     RETURNING tag, path, attempts";

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

async fn enqueue(
    tx: &mut Transaction<'static, Any>,
    tag: &str,
    path: Option<&str>,
) -> Result<(), RepoError> {
    sqlx::query(ENQUEUE)
        .bind(tag)
        .bind(opt_text(path))
        .bind(to_db(now_ms()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The image tags of deleted rows (pending ones too: a CDN may have cached
/// the 307 or the 404 of a pending image's URL).
pub(super) async fn owe_images(
    tx: &mut Transaction<'static, Any>,
    rows: &[ImageRecord],
) -> Result<(), RepoError> {
    for r in rows {
        enqueue(tx, &image_tag(&r.key), Some(&r.key.hosted_path(r.format))).await?;
    }
    Ok(())
}

/// One tag for every image of a user.
pub(super) async fn owe_user(
    tx: &mut Transaction<'static, Any>,
    user: &UserId,
) -> Result<(), RepoError> {
    enqueue(tx, &user_tag(user), None).await
}

pub(super) async fn owe_image(
    tx: &mut Transaction<'static, Any>,
    key: &ImageKey,
    path: Option<&str>,
) -> Result<(), RepoError> {
    enqueue(tx, &image_tag(key), path).await
}

impl SqlRepo {
    pub(super) async fn claim_purge_rows(
        &self,
        owner: &str,
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<QueuedPurge>, RepoError> {
        let rows = sqlx::query(CLAIM)
            .bind(owner)
            .bind(to_db(lease_until))
            .bind(to_db(now))
            .bind(i64::from(limit))
            .fetch_all(&self.write)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(QueuedPurge {
                tag: r.try_get("tag")?,
                path: r.try_get("path")?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
            });
        }
        out.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(out)
    }

    /// Leases `owner` held when it stopped: a restarted replica sends them
    /// now instead of after the lease runs out.
    pub(super) async fn release_purge_rows(&self, owner: &str) -> Result<(), RepoError> {
        sqlx::query(
            "UPDATE cdn_purges SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn finish_purge_rows(&self, tags: &[String]) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        for tag in tags {
            sqlx::query("DELETE FROM cdn_purges WHERE tag = $1")
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Back in the queue, due at `due_at`, with the reason kept for the
    /// admin page.
    pub(super) async fn retry_purge_rows(
        &self,
        tags: &[String],
        due_at: u64,
        error: &str,
    ) -> Result<(), RepoError> {
        let mut tx = self.begin().await?;
        for tag in tags {
            sqlx::query(
                "UPDATE cdn_purges SET due_at = $2, last_error = $3, lease_owner = NULL, \
                 lease_until = 0 WHERE tag = $1",
            )
            .bind(tag)
            .bind(to_db(due_at))
            .bind(text(error))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn purge_stats_row(&self) -> Result<PurgeStats, RepoError> {
        let r = sqlx::query("SELECT COUNT(*) AS n, MIN(queued_at) AS oldest FROM cdn_purges")
            .fetch_one(&self.read)
            .await?;
        let last = sqlx::query(
            "SELECT last_error FROM cdn_purges WHERE last_error IS NOT NULL \
             ORDER BY attempts DESC, queued_at LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?;
        Ok(PurgeStats {
            queued: from_db(r.try_get("n")?),
            oldest_queued_at: r.try_get::<Option<i64>, _>("oldest")?.map(from_db),
            last_error: match last {
                Some(l) => l.try_get("last_error")?,
                None => None,
            },
        })
    }
}
