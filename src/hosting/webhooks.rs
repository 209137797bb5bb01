//! Capturing the images of Replicate's webhooks on their way to Studio API
//! (issue 13): the rows are committed before the webhook is forwarded, and
//! the downloads run in the background, so Studio API still answers
//! Replicate within its few seconds.

use std::collections::HashMap;
use std::sync::Arc;

use super::download::Job;
use super::handout::{keyed, new_images, pending_replacement};
use super::Hosting;
use crate::clock::now_ms;
use crate::ids::UserId;
use crate::metrics;
use crate::repo::HandOut;
use crate::rewrite::Replacement;
use crate::sources::Source;

pub enum Capture {
    /// The rows are committed; the hosted URL of each URL source.
    Captured(HashMap<String, Replacement>),
    /// This delivery (webhook-id) was captured before.
    Duplicate,
    /// The rows could not be committed; nothing was captured.
    Failed,
}

impl Hosting {
    /// Remembers whose a prediction is, when a response shows it starting.
    pub async fn record_prediction(&self, prediction_id: &str, user: &UserId) {
        if let Err(e) = self
            .repo
            .record_prediction(prediction_id, user, now_ms())
            .await
        {
            tracing::warn!(prediction_id, error = %e, "could not record whose prediction this is");
        }
    }

    pub async fn prediction_user(&self, prediction_id: &str) -> Option<UserId> {
        match self.repo.prediction_user(prediction_id).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(prediction_id, error = %e, "could not look up whose prediction this is");
                None
            }
        }
    }

    /// Commits every URL source of one webhook (and its delivery id) in one
    /// transaction, then starts the downloads without waiting for them.
    pub async fn capture(
        self: &Arc<Self>,
        user: &UserId,
        sources: Vec<(String, Source)>,
        prediction_id: Option<String>,
        webhook_id: Option<&str>,
        base: &str,
    ) -> Capture {
        let now = now_ms();
        let keyed = keyed(user, sources);
        let batch = HandOut {
            images: new_images(&keyed),
            prediction_id: prediction_id.clone(),
            now,
            owner: Some(self.replica_id.clone()),
            lease_until: now + self.lease_ms(),
            due_at: now,
        };
        let rows = match self.repo.capture_webhook(webhook_id, &batch).await {
            Ok(Some(rows)) => rows,
            Ok(None) => return Capture::Duplicate,
            Err(e) => {
                metrics::get()
                    .storage_errors
                    .with_label_values(&["database"])
                    .inc();
                tracing::error!(error = %e, "could not commit a webhook's images; forwarded uncaptured");
                return Capture::Failed;
            }
        };
        let urls = super::handout::Urls {
            base,
            signing: &self.cfg.signing,
        };
        let mut out = HashMap::new();
        for (value, source, key) in keyed {
            let job = Job {
                key: key.clone(),
                source: value.clone(),
                prediction_id: prediction_id.clone(),
                handed_out_at: now,
            };
            // A data: URI has no row to commit: it is stored in the
            // background like the rest, and keeps its place in the body.
            let stored = rows
                .iter()
                .find(|r| r.key == key)
                .and_then(|r| r.stored_meta());
            if matches!(source, Source::Url(_)) {
                let r = match &stored {
                    Some(meta) => super::handout::replacement(&urls, meta),
                    None => pending_replacement(&urls, &key, &value, now),
                };
                out.insert(value.clone(), r);
            }
            if stored.is_none() {
                drop(self.ensure(job));
            }
        }
        Capture::Captured(out)
    }
}
