//! Leases on pending rows: which replica is downloading an image, and until
//! when. A replica that dies stops renewing; once its leases run out, any
//! other replica claims the rows and finishes the downloads.

use super::row::{self, to_db, COLUMNS};
use super::{ImageRecord, RepoError, SqlRepo};
use crate::ids::ImageKey;

/// Keys per statement when a list of keys is bound as parameters: well
/// under SQLite's and Postgres's parameter limits.
pub(super) const KEYS_PER_STATEMENT: usize = 200;

/// `(user_id, image_id) IN (VALUES ($n, $n+1), ...)` for `count` keys whose
/// parameters start at `$first`.
pub(super) fn key_list(first: usize, count: usize) -> String {
    let pairs: Vec<String> = (0..count)
        .map(|i| format!("(${}, ${})", first + 2 * i, first + 2 * i + 1))
        .collect();
    format!("(user_id, image_id) IN (VALUES {})", pairs.join(", "))
}

impl SqlRepo {
    pub(super) async fn claim_row(
        &self,
        key: &ImageKey,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, RepoError> {
        let done = sqlx::query(
            "UPDATE hosted_images SET lease_owner = $3, lease_until = $4 \
             WHERE user_id = $1 AND image_id = $2 AND state = 'pending' \
             AND (lease_until <= $5 OR lease_owner = $3)",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(owner)
        .bind(to_db(until))
        .bind(to_db(now))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn claim_due_rows(
        &self,
        owner: &str,
        now: u64,
        until: u64,
        limit: u32,
        own_too: bool,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let sql = format!(
            "UPDATE hosted_images SET lease_owner = $1, lease_until = $2 \
             WHERE (user_id, image_id) IN ( \
               SELECT user_id, image_id FROM hosted_images \
               WHERE state = 'pending' \
                 AND ((due_at <= $3 AND lease_until <= $3) OR ($5 = 1 AND lease_owner = $1)) \
               ORDER BY due_at LIMIT $4{}) \
             RETURNING {COLUMNS}",
            self.dialect.skip_locked()
        );
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(to_db(until))
            .bind(to_db(now))
            .bind(i64::from(limit))
            .bind(i64::from(own_too))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        row::records(&rows)
    }

    pub(super) async fn renew_lease_rows(
        &self,
        owner: &str,
        keys: &[ImageKey],
        until: u64,
    ) -> Result<(), RepoError> {
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE hosted_images SET lease_until = $2 \
                 WHERE lease_owner = $1 AND state = 'pending' AND {}",
                key_list(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(owner).bind(to_db(until));
            for k in chunk {
                q = q.bind(k.user.as_str()).bind(k.id.as_str());
            }
            q.execute(&self.write).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_lists_number_their_parameters() {
        assert_eq!(
            super::key_list(3, 2),
            "(user_id, image_id) IN (VALUES ($3, $4), ($5, $6))"
        );
    }
}
