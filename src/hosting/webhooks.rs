//! Capturing the images of Replicate's webhooks on their way to Studio API
//! (issue 13): the rows are committed before the webhook is forwarded, and
//! the downloads run in the background, so Studio API still answers
//! Replicate within its few seconds.

use std::collections::HashMap;
use std::sync::Arc;

use super::download::Job;
use super::handout::{keyed, new_images, pending_replacement, replacement, Urls};
use super::Hosting;
use crate::clock::now_ms;
use crate::ids::{ImageKey, Owner, UserId};
use crate::metrics;
use crate::repo::{HandOut, ImageRecord, ImageState};
use crate::rewrite::Replacement;
use crate::sources::Source;

pub enum Capture {
    /// The rows are committed; the hosted URL of each URL source.
    Captured(HashMap<String, Replacement>),
    /// This delivery (webhook-id) was captured before: nothing new was
    /// committed, but the hosted URLs its rows have are given again, so a
    /// retry reaches Studio API rewritten like the first delivery did.
    Duplicate(HashMap<String, Replacement>),
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
        owner: &Owner,
        sources: Vec<(String, Source)>,
        prediction_id: Option<String>,
        webhook_id: Option<&str>,
        base: &str,
    ) -> Capture {
        let now = now_ms();
        let keyed = keyed(&owner.user, sources);
        let urls = Urls {
            base,
            signing: &self.cfg.signing,
        };
        let batch = HandOut {
            images: new_images(&keyed),
            prediction_id: prediction_id.clone(),
            now,
            owner: Some(self.replica_id.clone()),
            lease_until: now + self.lease_ms(),
            due_at: now,
            trusted: owner.trusted,
        };
        let rows = match self.repo.capture_webhook(webhook_id, &batch).await {
            Ok(Some(rows)) => rows,
            Ok(None) => {
                let rows = self.rows_of(&keyed).await;
                return Capture::Duplicate(replacements(&keyed, &rows, &urls, now));
            }
            Err(e) => {
                metrics::get()
                    .storage_errors
                    .with_label_values(&["database"])
                    .inc();
                tracing::error!(error = %e, "could not commit a webhook's images; forwarded uncaptured");
                return Capture::Failed;
            }
        };
        for (value, _, key) in &keyed {
            // A data: URI has no row to commit: it is stored in the
            // background like the rest, and keeps its place in the body.
            let stored = rows
                .iter()
                .any(|r| &r.key == key && r.state == ImageState::Stored);
            if !stored {
                drop(self.ensure(Job {
                    key: key.clone(),
                    source: value.clone(),
                    prediction_id: prediction_id.clone(),
                    handed_out_at: now,
                    trusted: owner.trusted,
                }));
            }
        }
        Capture::Captured(replacements(&keyed, &rows, &urls, now))
    }

    /// The rows a retried delivery committed the first time. One read per
    /// source: a webhook carries a handful at most.
    async fn rows_of(&self, keyed: &[(String, Source, ImageKey)]) -> Vec<ImageRecord> {
        let mut out = Vec::new();
        for (_, source, key) in keyed {
            if !matches!(source, Source::Url(_)) {
                continue;
            }
            match self.repo.get(key).await {
                Ok(Some(row)) => out.push(row),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(image = %key, error = %e, "could not read a retried webhook's row; its URL is forwarded as it came")
                }
            }
        }
        out
    }
}

/// The hosted URL of each URL source whose row is stored or pending; a
/// source without such a row keeps its original URL.
fn replacements(
    keyed: &[(String, Source, ImageKey)],
    rows: &[ImageRecord],
    urls: &Urls,
    now: u64,
) -> HashMap<String, Replacement> {
    let mut out = HashMap::new();
    for (value, source, key) in keyed {
        if !matches!(source, Source::Url(_)) {
            continue;
        }
        let Some(row) = rows.iter().find(|r| &r.key == key) else {
            continue;
        };
        let r = match (row.stored_meta(), row.state) {
            (Some(meta), _) => replacement(urls, &meta),
            (None, ImageState::Pending) => pending_replacement(urls, key, value, now),
            (None, _) => continue,
        };
        out.insert(value.clone(), r);
    }
    out
}
