//! Views per image per hour (`image_views_hourly`), for "the most requested
//! images of the last 24 hours". Written in the transaction that flushes
//! the batched request times, so serving still never writes a row.

use sqlx::{Any, Row, Transaction};

use super::row::{self, from_db, to_db};
use super::{Hit, RepoError, SqlRepo};
use crate::ids::ImageKey;
use crate::image_format::Format;

pub const HOUR_MS: u64 = 3_600_000;

/// The start of the hour holding `ms`.
pub fn hour_of(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

/// A batch covers about two seconds, so its whole count goes to the hour of
/// its last request; a batch that straddles an hour boundary is off by those
/// two seconds at most.
const RECORD_HOUR: &str = "INSERT INTO image_views_hourly (user_id, image_id, hour, views) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (user_id, image_id, hour) DO UPDATE \
     SET views = image_views_hourly.views + excluded.views";

/// Hours that ended before the image's row was created belong to an
/// earlier image with the same id (deleted, then handed out again): they do
/// not count. Postgres sums BIGINT into NUMERIC, hence the CAST.
const TOP_VIEWED: &str = "SELECT h.user_id, h.image_id, h.format, h.size_bytes, h.views, \
     h.requested_at, CAST(SUM(v.views) AS BIGINT) AS recent \
     FROM image_views_hourly v JOIN hosted_images h \
       ON h.user_id = v.user_id AND h.image_id = v.image_id \
     WHERE v.hour >= $1 AND h.state = 'stored' AND v.hour + 3600000 > h.created_at \
     GROUP BY h.user_id, h.image_id, h.format, h.size_bytes, h.views, h.requested_at \
     ORDER BY recent DESC, h.user_id, h.image_id LIMIT $2";

/// One of the most requested images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopImage {
    pub key: ImageKey,
    pub format: Format,
    pub size: u64,
    /// All requests since it was stored.
    pub views: u64,
    /// Requests in the window asked for.
    pub recent_views: u64,
    pub requested_at: u64,
}

/// Adds one flushed batch entry to its hour. Called by `record_hits` for
/// rows that exist, inside its transaction.
pub(super) async fn record_hour(
    tx: &mut Transaction<'static, Any>,
    h: &Hit,
) -> Result<(), RepoError> {
    sqlx::query(RECORD_HOUR)
        .bind(h.key.user.as_str())
        .bind(h.key.id.as_str())
        .bind(to_db(hour_of(h.last_ms)))
        .bind(to_db(h.count))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl SqlRepo {
    pub(super) async fn top_viewed_rows(
        &self,
        since: u64,
        limit: u32,
    ) -> Result<Vec<TopImage>, RepoError> {
        let rows = sqlx::query(TOP_VIEWED)
            .bind(to_db(hour_of(since)))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let key = row::key(r)?;
                let format: String = r.try_get("format")?;
                Ok(TopImage {
                    format: Format::from_ext(&format)
                        .ok_or_else(|| RepoError::Corrupt(format!("{key}: format")))?,
                    size: from_db(r.try_get("size_bytes")?),
                    views: from_db(r.try_get("views")?),
                    recent_views: from_db(r.try_get("recent")?),
                    requested_at: from_db(r.try_get("requested_at")?),
                    key,
                })
            })
            .collect()
    }

    pub(super) async fn prune_view_rows(&self, before: u64) -> Result<u64, RepoError> {
        Ok(
            sqlx::query("DELETE FROM image_views_hourly WHERE hour < $1")
                .bind(to_db(hour_of(before)))
                .execute(&self.write)
                .await?
                .rows_affected(),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hours_start_on_the_hour() {
        assert_eq!(super::hour_of(0), 0);
        assert_eq!(super::hour_of(3_599_999), 0);
        assert_eq!(super::hour_of(3_600_000), 3_600_000);
        assert_eq!(super::hour_of(7_300_000), 7_200_000);
    }
}
