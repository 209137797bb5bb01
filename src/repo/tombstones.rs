//! Tombstones (issue 20, finding 17): a deleted image answers
//! `410 image_gone` with the reason it went, for IMAGE_TOMBSTONE_DAYS, so an
//! app can tell "gone, drop the record" from a typo. Rows in
//! `image_tombstones`, written only by [`super::deletes::record_deletion`]
//! in the transaction that deletes the image's row, and swept like failed
//! downloads (older than the window, or beyond the newest `keep`).

use sqlx::{Any, Row, Transaction};

use super::row::{from_db, to_db};
use super::{ImageRecord, RepoError, SqlRepo};
use crate::ids::ImageKey;
use crate::lifecycle::Reason;

/// Why an image was deleted; its string is part of the API (the `reason`
/// of a 410 body): never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// Not requested for IMAGE_MAX_AGE_DAYS.
    Expired,
    /// Evicted by IMAGE_PER_USER_LIMIT.
    UserLimit,
    /// Evicted to keep the store under its byte cap or free-space floor.
    StorageCap,
    /// Deleted by an admin (one image, or all of a user's).
    Deleted,
}

impl GoneReason {
    pub fn as_str(self) -> &'static str {
        match self {
            GoneReason::Expired => "expired",
            GoneReason::UserLimit => "user_limit",
            GoneReason::StorageCap => "storage_cap",
            GoneReason::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<GoneReason> {
        [
            GoneReason::Expired,
            GoneReason::UserLimit,
            GoneReason::StorageCap,
            GoneReason::Deleted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl From<Reason> for GoneReason {
    /// The free-space floor is a storage bound like the byte cap: to the
    /// app both mean "evicted for room".
    fn from(r: Reason) -> GoneReason {
        match r {
            Reason::Expired => GoneReason::Expired,
            Reason::UserLimit => GoneReason::UserLimit,
            Reason::StorageCap | Reason::MinFree => GoneReason::StorageCap,
        }
    }
}

/// What is remembered of a deleted image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub reason: GoneReason,
    pub deleted_at: u64,
    pub private: bool,
}

/// Leaves a tombstone for each of `rows`, in the caller's transaction. A
/// second deletion of the same id (handed out again, deleted again)
/// replaces the first.
pub(super) async fn bury(
    tx: &mut Transaction<'static, Any>,
    rows: &[ImageRecord],
    reason: GoneReason,
    now: u64,
) -> Result<(), RepoError> {
    for r in rows {
        sqlx::query(
            "INSERT INTO image_tombstones (user_id, image_id, reason, deleted_at, private) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, image_id) DO UPDATE SET reason = excluded.reason, \
               deleted_at = excluded.deleted_at, private = excluded.private",
        )
        .bind(r.key.user.as_str())
        .bind(r.key.id.as_str())
        .bind(reason.as_str())
        .bind(to_db(now))
        .bind(i64::from(r.private))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl SqlRepo {
    pub(super) async fn tombstone_row(
        &self,
        key: &ImageKey,
    ) -> Result<Option<Tombstone>, RepoError> {
        let r = sqlx::query(
            "SELECT reason, deleted_at, private FROM image_tombstones \
             WHERE user_id = $1 AND image_id = $2",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .fetch_optional(&self.read)
        .await?;
        let Some(r) = r else {
            return Ok(None);
        };
        let reason: String = r.try_get("reason")?;
        Ok(Some(Tombstone {
            reason: GoneReason::parse(&reason).ok_or_else(|| {
                RepoError::Corrupt(format!("tombstone of {key}: reason {reason:?}"))
            })?,
            deleted_at: from_db(r.try_get("deleted_at")?),
            private: r.try_get::<i64, _>("private")? != 0,
        }))
    }

    /// Forgets tombstones older than `before`, and all but the newest
    /// `keep`: the table stays bounded however many images are deleted.
    pub(super) async fn prune_tombstone_rows(
        &self,
        before: u64,
        keep: u32,
    ) -> Result<u64, RepoError> {
        let old = sqlx::query("DELETE FROM image_tombstones WHERE deleted_at < $1")
            .bind(to_db(before))
            .execute(&self.write)
            .await?
            .rows_affected();
        let over = sqlx::query(
            "DELETE FROM image_tombstones WHERE (user_id, image_id) NOT IN ( \
               SELECT user_id, image_id FROM image_tombstones \
               ORDER BY deleted_at DESC, user_id, image_id LIMIT $1)",
        )
        .bind(i64::from(keep))
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(old + over)
    }
}
