//! How a source becomes stored bytes, exactly once per replica.
//!
//! Every download runs in its own task, shared by everyone who needs that
//! image (single flight): a generate call, a first hit, or a takeover. A
//! client that stops waiting never cancels it. The store step checks the
//! row: an image deleted while it downloaded stays deleted.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};

use super::{lock, store_error, HostError, Hosting};
use crate::clock::now_ms;
use crate::fetch::FetchError;
use crate::ids::ImageKey;
use crate::metrics;
use crate::store::ImageMeta;

pub type SharedResult = Shared<BoxFuture<'static, Result<Arc<ImageMeta>, HostError>>>;

/// Storage trouble is not the source's fault: the row stays pending and is
/// tried again this much later, while the source lives.
const RETRY_STORAGE_AFTER_MS: u64 = 30_000;

/// One download to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: ImageKey,
    /// A URL, or a `data:` URI (which has no row until it is stored).
    pub source: String,
    pub prediction_id: Option<String>,
    /// When its URL was last handed out: the per-user limit never evicts an
    /// image handed out at or after this to make room for this one.
    pub handed_out_at: u64,
    /// Its owner's id came from a trusted source: the per-user limit then
    /// applies as it is stored.
    pub trusted: bool,
}

impl Job {
    fn is_data(&self) -> bool {
        self.source.starts_with("data:")
    }
}

impl Hosting {
    /// The single-flight download of one image.
    pub(super) fn ensure(self: &Arc<Self>, job: Job) -> SharedResult {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&job.key) {
            return f.clone();
        }
        let this = self.clone();
        let key = job.key.clone();
        let handle = tokio::spawn(async move {
            let result = this.download_and_store(&job).await;
            this.settle(&job, &result).await;
            lock(&this.inflight).remove(&job.key);
            result
        });
        let shared = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(HostError::Internal(format!("download task: {e}"))))
        }
        .boxed()
        .shared();
        inflight.insert(key, shared.clone());
        shared
    }

    pub(super) fn in_flight(&self, key: &ImageKey) -> bool {
        lock(&self.inflight).contains_key(key)
    }

    pub(super) fn in_flight_keys(&self) -> Vec<ImageKey> {
        lock(&self.inflight).keys().cloned().collect()
    }

    async fn download_and_store(&self, job: &Job) -> Result<Arc<ImageMeta>, HostError> {
        let mut downloaded = if job.is_data() {
            self.fetcher.from_data_uri(&job.source).await?
        } else {
            let url = url::Url::parse(&job.source)
                .map_err(|e| FetchError::Rejected(format!("bad source URL: {e}")))?;
            self.fetcher.fetch(&url).await?
        };
        // IMAGE_STORE_FORMAT and IMAGE_STRIP_METADATA (issue 14): what is
        // stored, hashed and served is the rewritten file.
        self.prepare_for_store(&mut downloaded).await;
        let meta = ImageMeta {
            key: job.key.clone(),
            format: downloaded.format,
            size: downloaded.size,
            sha256: downloaded.sha256.clone(),
            source_url: (!job.is_data()).then(|| job.source.clone()),
            prediction_id: job.prediction_id.clone(),
            created_at: now_ms(),
            private: false,
            variant: None,
            vary_accept: false,
        };
        // A delete of this path may still be queued (the image was deleted
        // and handed out again): dequeue it before the bytes go in, so a
        // sweep either finished with the old bytes already or finds nothing
        // left to remove (finding 14; the rule is in Repo::remove_queued).
        self.repo
            .forget_queued_delete(&meta.relative_path())
            .await?;
        self.store
            .put(&downloaded.staged, &meta)
            .await
            .map_err(store_error)?;
        let (requested_at, private) = if job.is_data() {
            let private = self
                .repo
                .upsert_stored(&meta, job.handed_out_at, job.trusted)
                .await?;
            (job.handed_out_at, private)
        } else {
            match self.repo.mark_stored(&meta, downloaded.dims).await? {
                Some(m) => (m.requested_at, m.private),
                None => {
                    // Deleted while it downloaded: it must stay deleted.
                    self.discard_bytes(&meta.relative_path()).await;
                    return Err(HostError::Deleted);
                }
            }
        };
        // Served (and cached) with the row's flag: an image made private
        // while it downloaded stays private (finding 5).
        let meta = ImageMeta { private, ..meta };
        self.stored_bytes.add(meta.size);
        let protect_since = requested_at.min(job.handed_out_at);
        if job.trusted {
            self.enforce_user_limit(&job.key, protect_since).await;
        }
        self.enforce_byte_budget(protect_since).await;
        Ok(Arc::new(meta))
    }

    async fn settle(&self, job: &Job, result: &Result<Arc<ImageMeta>, HostError>) {
        let key = &job.key;
        let source = redact_data(&job.source);
        let recorded = match result {
            Ok(meta) => {
                tracing::info!(image = %key, bytes = meta.size, format = meta.format.ext(), "image stored");
                Ok(())
            }
            Err(HostError::Deleted) => {
                tracing::info!(image = %key, "image deleted while it downloaded; its bytes were removed");
                Ok(())
            }
            // Nothing to record for a data: URI: it has no row, and the
            // response keeps the original.
            Err(e) if job.is_data() => {
                tracing::warn!(image = %key, %source, error = %e, "image not stored");
                Ok(())
            }
            Err(
                e @ (HostError::Store { .. }
                | HostError::Database(_)
                | HostError::Internal(_)
                | HostError::Fetch(FetchError::Storage { .. })),
            ) => {
                tracing::error!(image = %key, %source, error = %e, "image not stored for lack of storage; will retry");
                let due = now_ms() + RETRY_STORAGE_AFTER_MS;
                self.repo.postpone(key, &e.to_string(), due).await
            }
            Err(e) => {
                tracing::warn!(image = %key, %source, error = %e, "image not stored");
                self.repo.mark_failed(key, &e.to_string(), now_ms()).await
            }
        };
        if let Err(e) = recorded {
            metrics::get()
                .storage_errors
                .with_label_values(&["database"])
                .inc();
            tracing::error!(image = %key, error = %e, "could not record the download's outcome; the lease will run out and another attempt follows");
        }
    }
}

pub fn redact_data(source: &str) -> &str {
    if source.starts_with("data:") {
        "data:..."
    } else {
        source
    }
}
