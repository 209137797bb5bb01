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
use crate::repo::{ImageRecord, ImageState};
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
    Missing,
}

impl Hosting {
    pub async fn open_image(self: &Arc<Self>, key: &ImageKey) -> Lookup {
        if let Some(hit) = self.cache.get(key).await {
            return Lookup::Memory(hit);
        }
        let row = match self.repo.get(key).await {
            Ok(row) => row,
            Err(e) => return Lookup::StoreDown(e.to_string()),
        };
        match row {
            None => Lookup::Missing,
            Some(r) => match r.state {
                ImageState::Stored => match r.stored_meta() {
                    Some(m) => Lookup::Stored(Arc::new(m)),
                    None => Lookup::Missing,
                },
                ImageState::Pending if self.cfg.hosting_enabled => self.wait_pending(r).await,
                ImageState::Pending => Lookup::Missing,
                ImageState::Failed => {
                    Lookup::Unavailable(r.last_error.unwrap_or_else(|| "download failed".into()))
                }
            },
        }
    }

    /// A pending image: download it here (taking its lease when nobody
    /// holds one, so no other replica starts the same download) and wait
    /// for it, up to IMAGE_PERSIST_TIMEOUT_MS; then send the client to the
    /// source, which still works at that point.
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
            Err(_) => Lookup::Redirect(source),
        }
    }

    /// Records that the image was served; written to the database in the
    /// next batch.
    /// Whether the image is private (issue 15), for answers that do not
    /// carry the image's own metadata (variants). Memory first, then its
    /// row; no row is not private (the answer will be a 404 anyway).
    pub async fn is_private(&self, key: &ImageKey) -> Result<bool, String> {
        if let Some(img) = self.cache.get(key).await {
            return Ok(img.meta.private);
        }
        match self.repo.get(key).await {
            Ok(row) => Ok(row.is_some_and(|r| r.private)),
            Err(e) => Err(e.to_string()),
        }
    }

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
