//! Where a hosted image is served from. Memory first, without touching the
//! database; on a miss, one indexed lookup decides: stored (read the
//! store), pending (wait for the download), failed, or unknown.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::download::Job;
use super::Hosting;
use crate::cache::CachedImage;
use crate::clock::now_ms;
use crate::ids::ImageKey;
use crate::repo::{GoneReason, ImageRecord, ImageState};
use crate::store::{ByteRange, ByteStream, ImageMeta, StoreError};

/// Where a hosted image can be answered from.
pub enum Lookup {
    Memory(CachedImage),
    Stored(Arc<ImageMeta>),
    /// Was pending; the download this request waited for stored it.
    Fetched(Arc<ImageMeta>),
    /// Not stored yet and not ready in time: send the client to the source.
    Redirect(String),
    /// Finally failed: the reason, for a clear error.
    Unavailable(String),
    /// The metadata or the store could not be asked: unknown, which is not
    /// the same as missing.
    StoreDown(String),
    /// Deleted within IMAGE_TOMBSTONE_DAYS, for this reason (finding 17).
    Gone(GoneReason),
    /// Never existed, forgotten, or private and not to be shown to this
    /// request: one answer for all three, so none can be told apart.
    Missing,
}

impl Hosting {
    /// `see_private`: whether this request may be shown a private image (a
    /// valid signature, or signing off). When not, a private image is
    /// [`Lookup::Missing`] in every state (memory, stored, pending, failed,
    /// deleted), decided before anything is waited for or redirected to
    /// (issue 20, finding 5).
    pub async fn open_image(self: &Arc<Self>, key: &ImageKey, see_private: bool) -> Lookup {
        if let Some(hit) = self.cache.get_image(key).await {
            if hit.meta.private && !see_private {
                return Lookup::Missing;
            }
            return Lookup::Memory(hit);
        }
        let row = match self.repo.get(key).await {
            Ok(row) => row,
            Err(e) => return Lookup::StoreDown(e.to_string()),
        };
        let Some(r) = row else {
            return self.gone_or_missing(key, see_private).await;
        };
        if r.private && !see_private {
            return Lookup::Missing;
        }
        match r.state {
            ImageState::Stored => match r.stored_meta() {
                Some(m) => Lookup::Stored(Arc::new(m)),
                None => Lookup::Missing,
            },
            ImageState::Pending if self.cfg.hosting_enabled => self.wait_pending(r).await,
            ImageState::Pending => Lookup::Missing,
            ImageState::Failed => {
                Lookup::Unavailable(r.last_error.unwrap_or_else(|| "download failed".into()))
            }
        }
    }

    /// An image without a row: deleted lately (its tombstone, within
    /// IMAGE_TOMBSTONE_DAYS), or missing. A private image's tombstone is
    /// missing to a request that may not see it.
    pub(super) async fn gone_or_missing(&self, key: &ImageKey, see_private: bool) -> Lookup {
        let stone = match self.repo.tombstone(key).await {
            Ok(stone) => stone,
            Err(e) => return Lookup::StoreDown(e.to_string()),
        };
        let window = crate::clock::ms(self.cfg.lifecycle.tombstone_max_age);
        match stone {
            Some(t)
                if (see_private || !t.private)
                    && now_ms().saturating_sub(t.deleted_at) < window =>
            {
                Lookup::Gone(t.reason)
            }
            _ => Lookup::Missing,
        }
    }

    /// A pending image: download it here (taking its lease when nobody
    /// holds one, so no other replica starts the same download) and wait
    /// for it, up to IMAGE_PERSIST_TIMEOUT_MS; then send the client to the
    /// source, which still works at that point. Never for a private image:
    /// the source URL would outlive any signature, so that one answers 503
    /// until its bytes are in.
    async fn wait_pending(self: &Arc<Self>, r: ImageRecord) -> Lookup {
        let Some(source) = r.source_url.clone() else {
            return Lookup::Missing;
        };
        if !self.in_flight(&r.key) {
            let now = now_ms();
            if let Err(e) = self
                .repo
                .claim(&r.key, &self.replica_id, now, now + self.lease_ms())
                .await
            {
                tracing::warn!(image = %r.key, error = %e, "could not take the lease of a pending image");
            }
        }
        let fut = self.ensure(Job {
            key: r.key.clone(),
            source: source.clone(),
            prediction_id: r.prediction_id.clone(),
            handed_out_at: r.requested_at,
            trusted: r.trusted,
        });
        match tokio::time::timeout(self.cfg.persist.timeout, fut).await {
            Ok(Ok(meta)) => Lookup::Fetched(meta),
            Ok(Err(e)) => Lookup::Unavailable(e.to_string()),
            Err(_) if r.private => Lookup::StoreDown("the image is still downloading".into()),
            Err(_) => Lookup::Redirect(source),
        }
    }

    /// Whether the image is private (issue 15), for answers that do not
    /// carry the image's own metadata (variants). Memory first, then its
    /// row, then its tombstone (a deleted private image stays private).
    pub async fn is_private(&self, key: &ImageKey) -> Result<bool, String> {
        if let Some(img) = self.cache.get_image(key).await {
            return Ok(img.meta.private);
        }
        match self.repo.get(key).await {
            Ok(Some(row)) => Ok(row.private),
            Ok(None) => match self.repo.tombstone(key).await {
                Ok(stone) => Ok(stone.is_some_and(|t| t.private)),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }

    /// A stored image whose object is not the length its row says (short
    /// or long, on disk or S3: finding 13): counted, dropped from memory,
    /// and, when its source may still answer, made pending again so the
    /// next lookup downloads it afresh. `true` when requeued; otherwise
    /// the caller answers 404.
    pub async fn lost(&self, meta: &ImageMeta) -> bool {
        crate::metrics::get()
            .storage_errors
            .with_label_values(&["lost"])
            .inc();
        tracing::error!(image = %meta.key, variant = ?meta.variant, "stored object has the wrong length; treated as lost");
        // A variant is made again by its caller (forget_lost_variant).
        if meta.variant.is_some() {
            return false;
        }
        self.cache.invalidate(&meta.key).await;
        if meta.source_url.is_none() {
            return false;
        }
        match self
            .repo
            .requeue_lost(&meta.key, &meta.sha256, now_ms())
            .await
        {
            Ok(requeued) => requeued,
            Err(e) => {
                tracing::warn!(image = %meta.key, error = %e, "could not requeue a lost image");
                false
            }
        }
    }

    /// Records that the image was served; written to the database in the
    /// next batch.
    pub fn record_request(&self, key: &ImageKey) {
        self.hits.record(key, now_ms());
    }

    /// Can this image be held in memory?
    pub fn fits_in_memory(&self, size: u64) -> bool {
        self.cache.admits(size)
    }

    /// Reads a small image whole and keeps it in memory.
    pub async fn load_into_memory(&self, meta: Arc<ImageMeta>) -> Result<CachedImage, StoreError> {
        let generation = self.deletes.load(Ordering::SeqCst);
        let bytes: Bytes = self.store.read_all(&meta).await?;
        let img = CachedImage {
            bytes,
            meta,
            loaded: std::time::Instant::now(),
        };
        // A variant's bytes are cached under an alias of their own.
        let key = match &img.meta.variant {
            None => img.meta.key.clone(),
            Some(name) => super::variants::alias(&img.meta.key, name),
        };
        self.cache.insert(key.clone(), img.clone()).await;
        // A local delete may have run while the bytes were read: it cleared
        // memory before this insert, so clear again. Deletes elsewhere are
        // caught by the periodic check against the database.
        if self.deletes.load(Ordering::SeqCst) != generation {
            self.cache.invalidate(&key).await;
        }
        Ok(img)
    }

    pub async fn open_stream(
        &self,
        meta: &ImageMeta,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StoreError> {
        let stream = self.store.read(meta, range).await;
        if let Err(StoreError::NotFound) = &stream {
            tracing::warn!(image = %meta.key, "the database lists an image the store does not hold");
        }
        stream
    }

    /// The image as a local file for sendfile(2), when the store keeps one.
    pub fn open_file(&self, meta: &ImageMeta) -> Result<Option<std::fs::File>, StoreError> {
        self.store.open_file(meta)
    }
}
