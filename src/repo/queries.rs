//! Reads for the admin API, the cleanup walk and the gauges: every list is
//! paginated by a keyset, so no query grows with the table.

use std::collections::HashMap;

use sqlx::Row;

use super::leases::{key_list, KEYS_PER_STATEMENT};
use super::row::{self, from_db, to_db, COLUMNS};
use super::{Cursor, ImageRecord, ImageState, RepoError, SqlRepo, Totals, UserTotal};
use crate::ids::{ImageId, ImageKey, UserId};

/// Postgres sums BIGINT into NUMERIC; both databases read this back as i64.
/// `bytes` holds the variants too (issue 14): they are in the store, and
/// the disk cap counts them.
const TOTALS: &str = "SELECT \
     CAST(COALESCE(SUM(CASE WHEN state = 'stored' THEN 1 ELSE 0 END), 0) AS BIGINT) AS images, \
     CAST(COALESCE(SUM(CASE WHEN state = 'stored' THEN size_bytes ELSE 0 END), 0) \
          + (SELECT COALESCE(SUM(size_bytes), 0) FROM image_variants) AS BIGINT) AS bytes, \
     CAST(COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
     CAST(COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed \
     FROM hosted_images";

const USER_TOTALS: &str = "SELECT user_id, CAST(COUNT(*) AS BIGINT) AS images, \
     CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes, \
     CAST(MAX(requested_at) AS BIGINT) AS last_requested \
     FROM hosted_images WHERE state = 'stored'";

/// `LIKE` pattern for a prefix; user ids may hold `_`, which LIKE would
/// take as a wildcard.
pub(super) fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The rows of `count` keys (parameters from `$1`), with their state. The
/// state is compared in Rust: with `state = 'stored'` in the WHERE, SQLite
/// (no statistics) read every stored row through a state index and tested
/// each against the list, instead of looking the keys up by primary key.
/// At a million rows that was seconds of CPU per 200 cached images, every
/// IMAGE_CACHE_REVALIDATE_SECS (BENCHMARKS.md).
pub(super) fn existing_sql(count: usize) -> String {
    format!(
        "SELECT user_id, image_id, state, private FROM hosted_images WHERE {}",
        key_list(1, count)
    )
}

/// Stored rows by last request, newest first, after a cursor: one page of
/// the cleanup walk. `requested_at <= $1` is implied by the condition after
/// it, but spelled out it lets both databases start the page at the cursor
/// in `hosted_images_state_requested` (migration 0005). Without it, and
/// without that index, each page sorted (SQLite) or scanned down to the
/// cursor (Postgres) every stored row, so walking the table was quadratic:
/// at 100k rows a start kept SQLite busy for minutes (BENCHMARKS.md).
pub(super) fn stored_page_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM hosted_images WHERE state = 'stored' AND requested_at <= $1 \
         AND (requested_at < $1 OR (requested_at = $1 AND (user_id > $2 \
              OR (user_id = $2 AND image_id > $3)))) \
         ORDER BY requested_at DESC, user_id, image_id LIMIT $4"
    )
}

fn user_total(r: &sqlx::any::AnyRow) -> Result<UserTotal, RepoError> {
    let user: String = r.try_get("user_id")?;
    Ok(UserTotal {
        user: UserId::parse(&user).ok_or_else(|| RepoError::Corrupt(format!("user {user:?}")))?,
        images: from_db(r.try_get("images")?),
        bytes: from_db(r.try_get("bytes")?),
        last_requested: from_db(r.try_get("last_requested")?),
    })
}

impl SqlRepo {
    pub(super) async fn existing_keys(
        &self,
        keys: &[ImageKey],
    ) -> Result<HashMap<ImageKey, bool>, RepoError> {
        let mut out = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = existing_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for k in chunk {
                q = q.bind(k.user.as_str()).bind(k.id.as_str());
            }
            for r in q.fetch_all(&self.read).await? {
                let state: String = r.try_get("state")?;
                if state == ImageState::Stored.as_str() {
                    let private: i64 = r.try_get("private")?;
                    out.insert(row::key(&r)?, private != 0);
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn set_private_row(
        &self,
        key: &ImageKey,
        private: bool,
    ) -> Result<bool, RepoError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE hosted_images SET private = $3 WHERE user_id = $1 AND image_id = $2 \
             RETURNING format",
        )
        .bind(key.user.as_str())
        .bind(key.id.as_str())
        .bind(i64::from(private))
        .fetch_optional(&mut *tx)
        .await?;
        // The public copy must leave the edge too.
        if let (Some(r), true, true) = (&row, private, self.purge) {
            let format: String = r.try_get("format")?;
            let path = crate::image_format::Format::from_ext(&format).map(|f| key.hosted_path(f));
            super::purges::owe_image(&mut tx, key, path.as_deref()).await?;
        }
        tx.commit().await?;
        Ok(row.is_some())
    }

    pub(super) async fn stored_rows_page(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let (at, user, id) = match after {
            Some(c) => (to_db(c.at), c.key.user.as_str(), c.key.id.as_str()),
            None => (i64::MAX, "", ""),
        };
        let rows = sqlx::query(&stored_page_sql())
            .bind(at)
            .bind(user)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        row::records(&rows)
    }

    pub(super) async fn least_recent_stored_rows(
        &self,
        before: u64,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        // (state, requested_at) is indexed: a range from the oldest up.
        let sql = format!(
            "SELECT {COLUMNS} FROM hosted_images WHERE state = 'stored' AND requested_at < $1 \
             ORDER BY requested_at, user_id, image_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(to_db(before))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        row::records(&rows)
    }

    pub(super) async fn user_image_rows(
        &self,
        user: &UserId,
        after: Option<&ImageId>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM hosted_images WHERE user_id = $1 AND image_id > $2 \
             ORDER BY image_id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(user.as_str())
            .bind(after.map_or("", ImageId::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        row::records(&rows)
    }

    pub(super) async fn user_totals(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserTotal>, RepoError> {
        let sql = format!(
            "{USER_TOTALS} AND user_id LIKE $1 ESCAPE '\\' AND user_id > $2 \
             GROUP BY user_id ORDER BY user_id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(like_prefix(prefix))
            .bind(after.map_or("", UserId::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(user_total).collect()
    }

    pub(super) async fn top_user_totals(&self, n: u32) -> Result<Vec<UserTotal>, RepoError> {
        let sql = format!("{USER_TOTALS} GROUP BY user_id ORDER BY bytes DESC, user_id LIMIT $1");
        let rows = sqlx::query(&sql)
            .bind(i64::from(n))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(user_total).collect()
    }

    pub(super) async fn failed_rows(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        let (at, user, id) = match after {
            Some(c) => (to_db(c.at), c.key.user.as_str(), c.key.id.as_str()),
            None => (i64::MAX, "", ""),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM hosted_images WHERE state = 'failed' \
             AND (failed_at < $1 OR (failed_at = $1 AND (user_id > $2 \
                  OR (user_id = $2 AND image_id > $3)))) \
             ORDER BY failed_at DESC, user_id, image_id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(at)
            .bind(user)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        row::records(&rows)
    }

    pub(super) async fn prune_failed_rows(&self, before: u64, keep: u32) -> Result<u64, RepoError> {
        let old =
            sqlx::query("DELETE FROM hosted_images WHERE state = 'failed' AND failed_at < $1")
                .bind(to_db(before))
                .execute(&self.write)
                .await?
                .rows_affected();
        let over = sqlx::query(
            "DELETE FROM hosted_images WHERE state = 'failed' AND (user_id, image_id) NOT IN ( \
               SELECT user_id, image_id FROM hosted_images WHERE state = 'failed' \
               ORDER BY failed_at DESC, user_id, image_id LIMIT $1)",
        )
        .bind(i64::from(keep))
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(old + over)
    }

    pub(super) async fn totals_row(&self) -> Result<Totals, RepoError> {
        let r = sqlx::query(TOTALS).fetch_one(&self.read).await?;
        Ok(Totals {
            images: from_db(r.try_get("images")?),
            bytes: from_db(r.try_get("bytes")?),
            pending: from_db(r.try_get("pending")?),
            failed: from_db(r.try_get("failed")?),
        })
    }

    pub(super) async fn meta_value(&self, name: &str) -> Result<Option<String>, RepoError> {
        let r = sqlx::query("SELECT value FROM permaproxy_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        Ok(r.map(|r| r.try_get("value")).transpose()?)
    }

    pub(super) async fn set_meta_value(&self, name: &str, value: &str) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO permaproxy_meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(super::like_prefix("user_1"), "user\\_1%");
        assert_eq!(super::like_prefix(""), "%");
    }
}
