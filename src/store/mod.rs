//! The byte store: where images live. The metadata that decides what
//! exists lives in the database ([`crate::repo`]); a store only publishes,
//! reads and deletes bytes, and keeps a copy of each image's metadata beside
//! it (a sidecar on disk, object metadata on S3) so `permaproxy reindex` can
//! rebuild the database from the store alone.
//!
//! Images arrive as staged files that the fetcher has already written and
//! fsynced, so every backend only has to publish them.

pub mod disk;
pub mod object;

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::ids::ImageKey;
use crate::image_format::Format;

/// A stored image as serving needs it. Typed: the key was parsed once,
/// where the row or object was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    pub key: ImageKey,
    pub format: Format,
    pub size: u64,
    pub sha256: String,
    pub source_url: Option<String>,
    pub prediction_id: Option<String>,
    /// When the bytes were stored, Unix milliseconds (Last-Modified).
    pub created_at: u64,
    /// Served only with a valid signature (IMAGE_URL_SIGNING=sign).
    pub private: bool,
    /// `None` for an image itself; for one of its variants (issue 14), the
    /// variant's object name under the image's variant folder (see
    /// [`variant_path`]). `key` stays the image's own key.
    pub variant: Option<std::sync::Arc<str>>,
    /// The answer depends on the request's `Accept` (`format=auto`): the
    /// response carries `Vary: Accept`.
    pub vary_accept: bool,
}

/// The folder holding an image's variants, beside the image:
/// `{user}/{id}.v`. No image file can be named like it (`v` is not an
/// image extension), and listing and reindex skip it.
pub fn variant_dir(key: &ImageKey) -> String {
    format!("{}/{}.v", key.user, key.id)
}

/// `{user}/{id}.v/{name}.{ext}`: one variant object.
pub fn variant_path(key: &ImageKey, name: &str, format: Format) -> String {
    format!("{}/{name}.{}", variant_dir(key), format.ext())
}

/// A variant's object name: lowercase letters, digits and `-` only, so it
/// is one safe path segment on any backend.
pub fn is_variant_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl ImageMeta {
    /// A strong validator from the content digest.
    pub fn etag(&self) -> String {
        format!("\"{}\"", &self.sha256[..self.sha256.len().min(32)])
    }

    pub fn content_type(&self) -> &'static str {
        self.format.content_type()
    }

    /// `{user}/{id}.{ext}` (a variant: `{user}/{id}.v/{name}.{ext}`),
    /// relative to the store's root or prefix.
    pub fn relative_path(&self) -> String {
        match &self.variant {
            None => self.key.relative_path(self.format),
            Some(name) => variant_path(&self.key, name, self.format),
        }
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
    /// The object's length is not its row's: truncated or replaced behind
    /// this program's back. Lost, like a missing object, on every backend
    /// (issue 20, finding 13); never served as it is.
    #[error("the stored object holds {actual} bytes, its metadata says {expected}")]
    WrongSize { expected: u64, actual: u64 },
}

/// Checks an object's length against its metadata.
pub fn check_size(meta: &ImageMeta, actual: u64) -> Result<(), StoreError> {
    if actual == meta.size {
        Ok(())
    } else {
        Err(StoreError::WrongSize {
            expected: meta.size,
            actual,
        })
    }
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

    /// Deletes the object at `relative_path` and the metadata kept beside it.
    /// Deleting what is already gone is not an error.
    async fn delete(&self, relative_path: &str) -> Result<(), StoreError>;

    /// The metadata kept with the object for `meta`'s key and format, if the
    /// object exists.
    async fn stat(&self, meta: &ImageMeta) -> Result<Option<ImageMeta>, StoreError>;

    /// Every stored image, from the metadata kept beside the bytes. Only
    /// `reindex`, the first start after an upgrade and `migrate` walk the
    /// whole store; serving never does.
    async fn list(&self) -> Result<Vec<ImageMeta>, StoreError>;

    /// Writes and removes a small probe, for readiness.
    async fn probe(&self) -> Result<(), StoreError>;

    /// Free bytes where images live, when the backend can tell.
    fn free_bytes(&self) -> Option<u64>;

    /// The size of the volume images live on, when the backend can tell.
    fn volume_bytes(&self) -> Option<u64> {
        None
    }

    fn name(&self) -> &'static str;

    /// Small state objects an older version shared between replicas
    /// (per-replica access times), read once when it is imported.
    async fn legacy_state(&self, _dir: &str) -> Result<Vec<Bytes>, StoreError> {
        Ok(Vec::new())
    }
}

/// What an object or sidecar of a stored image holds, as it was written by
/// every version so far: the keys parse into a typed [`ImageMeta`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetaRecord {
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
    pub created_at: u64,
}

impl MetaRecord {
    pub fn from_meta(m: &ImageMeta) -> MetaRecord {
        MetaRecord {
            id: m.key.id.to_string(),
            user_id: m.key.user.to_string(),
            format: m.format,
            content_type: m.content_type().to_string(),
            size: m.size,
            sha256: m.sha256.clone(),
            source_url: m.source_url.clone(),
            prediction_id: m.prediction_id.clone(),
            created_at: m.created_at,
        }
    }

    pub fn into_meta(self) -> Option<ImageMeta> {
        let key = ImageKey::new(
            crate::ids::UserId::parse(&self.user_id)?,
            crate::ids::ImageId::parse(&self.id)?,
        );
        Some(ImageMeta {
            key,
            format: self.format,
            size: self.size,
            sha256: self.sha256,
            source_url: self.source_url,
            prediction_id: self.prediction_id,
            created_at: self.created_at,
            private: false,
            variant: None,
            vary_accept: false,
        })
    }
}
