//! The storage interface. The disk store is the default; an object store
//! implements the same trait. Images arrive as staged files that the fetcher
//! has already written and fsynced, so every backend only has to publish them.

pub mod disk;
pub mod s3;

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::Format;

/// What is kept with every image: enough to serve it, and to rebuild any
/// index from the store alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: String,
    pub user_id: String,
    pub format: Format,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub source_url: Option<String>,
    #[serde(default)]
    pub prediction_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

impl ImageMeta {
    /// The typed key, if the stored names are valid.
    pub fn key(&self) -> Option<ImageKey> {
        Some(ImageKey::new(
            UserId::parse(&self.user_id)?,
            ImageId::parse(&self.id)?,
        ))
    }

    /// A strong validator from the content digest.
    pub fn etag(&self) -> String {
        format!("\"{}\"", &self.sha256[..self.sha256.len().min(32)])
    }

    pub fn relative_path(&self) -> String {
        format!("{}/{}.{}", self.user_id, self.id, self.format.ext())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("storage is full")]
    Full,
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn from_io(e: std::io::Error) -> StoreError {
        if is_disk_full(&e) {
            StoreError::Full
        } else if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound
        } else {
            StoreError::Io(e)
        }
    }
}

pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An inclusive byte range, already checked against the image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Publishes a staged, fsynced file under the key in `meta`. Publishing
    /// the same image twice is harmless: same key, same bytes.
    async fn put(&self, staged: &Path, meta: &ImageMeta) -> Result<(), StoreError>;

    async fn head(&self, key: &ImageKey) -> Result<Option<ImageMeta>, StoreError>;

    /// Streams the image, or the given range of it.
    async fn read(
        &self,
        meta: &ImageMeta,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StoreError>;

    /// The whole image in memory; only used for images small enough to cache.
    async fn read_all(&self, meta: &ImageMeta) -> Result<Bytes, StoreError>;

    /// The image as an open local file, when the backend keeps one, so its
    /// body can go out with sendfile(2) instead of through [`Store::read`].
    fn open_file(&self, _meta: &ImageMeta) -> Result<Option<std::fs::File>, StoreError> {
        Ok(None)
    }

    async fn delete(&self, meta: &ImageMeta) -> Result<(), StoreError>;

    /// Every stored image; the store is the truth any index is rebuilt from.
    async fn list(&self) -> Result<Vec<ImageMeta>, StoreError>;

    /// Writes and removes a small probe, for readiness.
    async fn probe(&self) -> Result<(), StoreError>;

    /// Free bytes where images live, when the backend can tell.
    fn free_bytes(&self) -> Option<u64>;

    fn name(&self) -> &'static str;

    /// Small shared state that every replica can read (access times). A
    /// single local disk needs none of it.
    async fn put_state(&self, _name: &str, _data: Bytes) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_state(&self, _dir: &str) -> Result<Vec<Bytes>, StoreError> {
        Ok(Vec::new())
    }
}
