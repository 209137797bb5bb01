//! Image metadata in a real database: the plan's `hosted_images` table.
//!
//! The engine talks to the [`Repo`] trait and never to SQL. [`SqlRepo`]
//! implements it for SQLite (embedded, the default) and Postgres (several
//! replicas sharing one bucket) with one schema and one set of queries; the
//! few places where the two differ live in [`Dialect`].
//!
//! Bytes are not here: they stay in the [`crate::store::Store`].

mod admin;
mod deletes;
mod dialect;
mod images;
mod leases;
mod purges;
mod queries;
mod row;
pub mod schema;
mod sql;
mod tombstones;
mod variants;
mod views;
mod webhooks;

use std::collections::HashMap;

use async_trait::async_trait;

use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::Format;
use crate::store::ImageMeta;

pub use admin::AdminRepo;
pub use deletes::Removal;
pub use dialect::Dialect;
pub use sql::SqlRepo;
pub use tombstones::{GoneReason, Tombstone};
pub use variants::{VariantHit, VariantPut, VariantRecord};
pub use views::TopImage;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row in hosted_images: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// Handed out; the bytes are not stored yet.
    Pending,
    Stored,
    /// The source failed for good (gone, refused, out of retries).
    Failed,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Stored => "stored",
            ImageState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ImageState> {
        match s {
            "pending" => Some(ImageState::Pending),
            "stored" => Some(ImageState::Stored),
            "failed" => Some(ImageState::Failed),
            _ => None,
        }
    }
}

/// One row of `hosted_images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub key: ImageKey,
    pub state: ImageState,
    pub format: Format,
    pub size: u64,
    pub sha256: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub source_url: Option<String>,
    pub prediction_id: Option<String>,
    pub created_at: u64,
    pub stored_at: Option<u64>,
    pub requested_at: u64,
    pub views: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub failed_at: Option<u64>,
    pub due_at: u64,
    pub lease_owner: Option<String>,
    pub lease_until: u64,
    pub private: bool,
    /// Filed under an id from a trusted source: subject to the per-user limit.
    pub trusted: bool,
}

impl ImageRecord {
    /// What serving needs, once the bytes are stored.
    pub fn stored_meta(&self) -> Option<ImageMeta> {
        (self.state == ImageState::Stored).then(|| ImageMeta {
            key: self.key.clone(),
            format: self.format,
            size: self.size,
            sha256: self.sha256.clone(),
            source_url: self.source_url.clone(),
            prediction_id: self.prediction_id.clone(),
            created_at: self.stored_at.unwrap_or(self.created_at),
            private: self.private,
            variant: None,
            vary_accept: false,
        })
    }
}

/// A row just marked stored, as far as serving its bytes needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub requested_at: u64,
    /// The row's flag: the downloaded image is served (and cached) with it,
    /// never as public by default (issue 20, finding 5).
    pub private: bool,
}

/// A source about to be handed out as a hosted URL.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub key: ImageKey,
    pub source_url: String,
    /// A guess from the URL; the bytes decide once stored.
    pub format: Format,
}

/// The hosted URLs of one response, committed in one transaction before
/// any of them leaves the proxy.
#[derive(Debug, Clone)]
pub struct HandOut {
    pub images: Vec<NewImage>,
    pub prediction_id: Option<String>,
    pub now: u64,
    /// This replica downloads them now: it takes their leases.
    pub owner: Option<String>,
    pub lease_until: u64,
    /// When any replica may download a pending row it finds abandoned.
    pub due_at: u64,
    /// The user id came from a trusted source (a response header Studio API
    /// set, a verified token): only then do these images count against
    /// the per-user limit, and only then can it evict them.
    pub trusted: bool,
}

/// A CDN purge claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPurge {
    pub tag: String,
    /// The hosted path, for an image's tag.
    pub path: Option<String>,
    /// Sends tried so far, this one included.
    pub attempts: u32,
}

/// The purge queue, for metrics and the admin page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub queued: u64,
    pub oldest_queued_at: Option<u64>,
    pub last_error: Option<String>,
}

/// Requests seen since the last flush, for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub key: ImageKey,
    pub last_ms: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub images: u64,
    pub bytes: u64,
    pub pending: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTotal {
    pub user: UserId,
    pub images: u64,
    pub bytes: u64,
    pub last_requested: u64,
}

/// A keyset position in a walk ordered by last request, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: u64,
    pub key: ImageKey,
}

/// `AdminRepo` (in `admin.rs`) holds what only the admin page needs.
#[async_trait]
pub trait Repo: Send + Sync + AdminRepo {
    fn dialect(&self) -> Dialect;

    /// Can the database answer right now? (Readiness.)
    async fn ping(&self) -> Result<(), RepoError>;

    /// Commits the rows of one response (pending, or a new request time
    /// for rows already there) and returns them as they now are.
    async fn hand_out(&self, batch: &HandOut) -> Result<Vec<ImageRecord>, RepoError>;

    async fn get(&self, key: &ImageKey) -> Result<Option<ImageRecord>, RepoError>;

    /// The bytes are in the store. Returns the row as it now is, or `None`
    /// when the row is gone (deleted while the download ran): the caller
    /// must remove the bytes again.
    async fn mark_stored(
        &self,
        meta: &ImageMeta,
        dims: Option<(u32, u32)>,
    ) -> Result<Option<Marked>, RepoError>;

    /// An image stored without a pending row first (a `data:` URI, an
    /// import, a reindex). Keeps request times already recorded. `trusted`:
    /// its user id came from a trusted source (see [`HandOut::trusted`]).
    /// Returns the row's private flag.
    async fn upsert_stored(
        &self,
        meta: &ImageMeta,
        requested_at: u64,
        trusted: bool,
    ) -> Result<bool, RepoError>;

    /// Upserts a row as it was in an older store (import of its journal).
    async fn upsert_record(&self, rec: &ImageRecord) -> Result<(), RepoError>;

    async fn mark_failed(&self, key: &ImageKey, reason: &str, now: u64) -> Result<(), RepoError>;

    /// A stored row whose object is lost becomes pending again, due `now`,
    /// if it has a source and still has this `sha256`. `false` otherwise.
    async fn requeue_lost(&self, key: &ImageKey, sha256: &str, now: u64)
        -> Result<bool, RepoError>;

    /// Not the source's fault (storage trouble): try again at `due_at`.
    async fn postpone(&self, key: &ImageKey, reason: &str, due_at: u64) -> Result<(), RepoError>;

    /// Takes the lease of one pending row if it is free or has run out.
    async fn claim(
        &self,
        key: &ImageKey,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, RepoError>;

    /// Takes up to `limit` pending rows that are due and whose lease has run
    /// out (or is `owner`'s own, after a restart), skipping rows another
    /// replica is claiming at the same moment.
    async fn claim_due(
        &self,
        owner: &str,
        now: u64,
        until: u64,
        limit: u32,
        own_too: bool,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    async fn renew_leases(
        &self,
        owner: &str,
        keys: &[ImageKey],
        until: u64,
    ) -> Result<(), RepoError>;

    async fn record_hits(&self, hits: &[Hit]) -> Result<(), RepoError>;

    /// Removes rows, queues their objects for deletion and leaves their
    /// tombstones (`reason`), in one transaction. Returns the rows that
    /// were there.
    async fn delete_images(
        &self,
        keys: &[ImageKey],
        reason: GoneReason,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    /// Deletes up to `limit` of the user's rows (reason `deleted`), as
    /// [`Repo::delete_images`] does; empty when none are left.
    async fn delete_user_page(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    /// What is remembered of a deleted image, if anything.
    async fn tombstone(&self, key: &ImageKey) -> Result<Option<Tombstone>, RepoError>;

    /// Forgets tombstones older than `before`, and all but the newest `keep`.
    async fn prune_tombstones(&self, before: u64, keep: u32) -> Result<u64, RepoError>;

    /// Deletes the user's stored images beyond `limit`, least recently
    /// requested first, never one requested at or after `protect_since`.
    async fn enforce_user_limit(
        &self,
        user: &UserId,
        limit: u64,
        protect_since: u64,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    async fn queued_deletes(&self, limit: u32) -> Result<Vec<String>, RepoError>;
    /// Dequeues a path: called before its bytes are stored again (see
    /// [`Repo::remove_queued`]).
    async fn forget_queued_delete(&self, path: &str) -> Result<(), RepoError>;
    /// Queues an object no row describes, for [`Repo::remove_queued`].
    async fn queue_delete(&self, path: &str) -> Result<(), RepoError>;
    /// Removes a queued object from `store`, only while it is still queued,
    /// the check and the removal being one step to a writer that dequeues
    /// the path before storing it again (issue 20, finding 14).
    async fn remove_queued(
        &self,
        path: &str,
        store: &dyn crate::store::Store,
    ) -> Result<Removal, RepoError>;

    /// Which of `keys` still have a stored row, with their private flag.
    async fn existing(&self, keys: &[ImageKey]) -> Result<HashMap<ImageKey, bool>, RepoError>;

    /// Marks one image private (or not). `false` when there is no such row.
    async fn set_private(&self, key: &ImageKey, private: bool) -> Result<bool, RepoError>;

    /// Claims up to `limit` due purges for `owner` until `lease_until`.
    async fn claim_purges(
        &self,
        owner: &str,
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<QueuedPurge>, RepoError>;

    /// Gives up the leases `owner` holds (a restart of that replica).
    async fn release_purges(&self, owner: &str) -> Result<(), RepoError>;

    /// The provider took these: they leave the queue.
    async fn finish_purges(&self, tags: &[String]) -> Result<(), RepoError>;

    /// These are tried again at `due_at`.
    async fn retry_purges(
        &self,
        tags: &[String],
        due_at: u64,
        error: &str,
    ) -> Result<(), RepoError>;

    async fn purge_stats(&self) -> Result<PurgeStats, RepoError>;

    /// Stored rows requested before `before`, least recently requested
    /// first: what a disk bound evicts as an image is stored.
    async fn least_recent_stored(
        &self,
        before: u64,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    /// Stored rows by last request, newest first, after `after`.
    async fn stored_page(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    async fn user_images(
        &self,
        user: &UserId,
        after: Option<&ImageId>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    async fn users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserTotal>, RepoError>;

    /// Failed rows, newest failure first.
    async fn failed(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError>;

    /// Forgets failures older than `before`, and all but the newest `keep`.
    async fn prune_failed(&self, before: u64, keep: u32) -> Result<u64, RepoError>;

    async fn totals(&self) -> Result<Totals, RepoError>;
    async fn top_users(&self, n: u32) -> Result<Vec<UserTotal>, RepoError>;

    /// Remembers whose a prediction is (first writer wins).
    async fn record_prediction(
        &self,
        prediction_id: &str,
        user: &UserId,
        now: u64,
    ) -> Result<(), RepoError>;

    async fn prediction_user(&self, prediction_id: &str) -> Result<Option<UserId>, RepoError>;

    /// Records a webhook delivery and hands out its images in one
    /// transaction; `None` when `webhook_id` was captured before.
    async fn capture_webhook(
        &self,
        webhook_id: Option<&str>,
        batch: &HandOut,
    ) -> Result<Option<Vec<ImageRecord>>, RepoError>;

    /// Forgets predictions and webhook deliveries older than `before`.
    async fn prune_webhooks(&self, before: u64) -> Result<u64, RepoError>;

    async fn meta_get(&self, name: &str) -> Result<Option<String>, RepoError>;
    async fn meta_set(&self, name: &str, value: &str) -> Result<(), RepoError>;

    // Variants (issue 14), in `image_variants`. Deleting an image deletes
    // its variant rows and queues their objects (see `delete_images`).

    async fn get_variant(
        &self,
        key: &ImageKey,
        variant_key: &str,
    ) -> Result<Option<VariantRecord>, RepoError>;

    /// Records a variant whose bytes are in the store, only while its image
    /// is stored; the first recording of a variant key wins. At `limit`
    /// variants the least recently requested make room, in the same
    /// transaction.
    async fn record_variant(&self, v: &VariantRecord, limit: u64) -> Result<VariantPut, RepoError>;

    /// Variants served since the last flush.
    async fn record_variant_hits(&self, hits: &[VariantHit]) -> Result<(), RepoError>;

    /// Bytes of each image's variants (images without any are absent): the
    /// disk cap frees them with their image.
    async fn variant_bytes(&self, keys: &[ImageKey]) -> Result<HashMap<ImageKey, u64>, RepoError>;

    /// Queued deletions of these images' variant objects, so the engine can
    /// remove them right after the delete that queued them.
    async fn queued_variant_deletes(&self, keys: &[ImageKey]) -> Result<Vec<String>, RepoError>;

    /// How many variants of this image are stored.
    async fn variant_count(&self, key: &ImageKey) -> Result<u64, RepoError>;

    /// Forgets a variant row whose object is gone, so it is made again.
    async fn forget_variant(&self, key: &ImageKey, variant_key: &str) -> Result<(), RepoError>;
}

#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod tests;
