//! Predictions and webhook deliveries (issue 13): whose a prediction is, and
//! which deliveries were already captured.

use super::images::hand_out_in;
use super::row::{text, to_db};
use super::{HandOut, ImageRecord, RepoError, SqlRepo};
use crate::ids::UserId;

impl SqlRepo {
    pub(super) async fn record_prediction_row(
        &self,
        prediction_id: &str,
        user: &UserId,
        now: u64,
    ) -> Result<(), RepoError> {
        sqlx::query(
            "INSERT INTO predictions (prediction_id, user_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (prediction_id) DO NOTHING",
        )
        .bind(text(prediction_id))
        .bind(user.as_str())
        .bind(to_db(now))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub(super) async fn prediction_user_row(
        &self,
        prediction_id: &str,
    ) -> Result<Option<UserId>, RepoError> {
        let r = sqlx::query("SELECT user_id FROM predictions WHERE prediction_id = $1")
            .bind(text(prediction_id))
            .fetch_optional(&self.read)
            .await?;
        Ok(
            r.and_then(|r| sqlx::Row::try_get::<String, _>(&r, "user_id").ok())
                .and_then(|u| UserId::parse(&u)),
        )
    }

    /// Records the delivery and hands out its images in one transaction:
    /// `None` when this webhook-id was captured before (a retry).
    pub(super) async fn capture_webhook_rows(
        &self,
        webhook_id: Option<&str>,
        batch: &HandOut,
    ) -> Result<Option<Vec<ImageRecord>>, RepoError> {
        let mut tx = self.begin().await?;
        if let Some(id) = webhook_id {
            let fresh = sqlx::query(
                "INSERT INTO webhook_events (webhook_id, received_at) VALUES ($1, $2) \
                 ON CONFLICT (webhook_id) DO NOTHING",
            )
            .bind(text(id))
            .bind(to_db(batch.now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if !fresh {
                return Ok(None);
            }
        }
        let rows = hand_out_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(Some(rows))
    }

    /// Forgets predictions and deliveries older than `before`: Replicate's
    /// outputs are gone after an hour, and its retries after minutes.
    pub(super) async fn prune_webhook_rows(&self, before: u64) -> Result<u64, RepoError> {
        let mut n = 0;
        for sql in [
            "DELETE FROM predictions WHERE created_at < $1",
            "DELETE FROM webhook_events WHERE received_at < $1",
        ] {
            n += sqlx::query(sql)
                .bind(to_db(before))
                .execute(&self.write)
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}
