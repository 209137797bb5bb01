//! [`SqlRepo`]: the [`Repo`] on SQLite or Postgres through sqlx's Any
//! driver. Connecting runs the versioned migrations embedded in the binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use super::{
    Cursor, Dialect, GoneReason, HandOut, Hit, ImageRecord, Marked, PurgeStats, QueuedPurge,
    Removal, Repo, RepoError, Tombstone, Totals, UserTotal, VariantHit, VariantPut, VariantRecord,
};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::store::ImageMeta;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct SqlRepo {
    pub(super) dialect: Dialect,
    /// Reads. On SQLite, WAL lets these run beside the writer.
    pub(super) read: AnyPool,
    /// Writes. On SQLite one connection, so this process never races itself
    /// for the write lock; on Postgres the same pool as reads.
    pub(super) write: AnyPool,
    /// A CDN purge is queued with every delete (and every flip to private):
    /// only when a provider will send them, or the queue would only grow.
    pub(super) purge: bool,
}

/// SQLite settings per connection: WAL so readers never block the writer,
/// FULL sync so a committed row survives power loss (it stands for a URL
/// already handed out), and a busy timeout for other processes
/// (`permaproxy cleanup` beside a running proxy).
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 10000",
];

/// `schema`: Postgres only, the schema every connection searches.
fn pool_options(dialect: Dialect, max: u32, schema: Option<Arc<str>>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        // A database that cannot be reached must fail requests fast:
        // callers fall back (original URLs, memory cache, 503).
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            let schema = schema.clone();
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    for pragma in SQLITE_PRAGMAS {
                        conn.execute(*pragma).await?;
                    }
                }
                if let Some(schema) = schema {
                    conn.execute(super::schema::set_search_path(&schema).as_str())
                        .await?;
                }
                Ok(())
            })
        })
}

impl SqlRepo {
    /// Connects, creating an SQLite file if needed, and runs pending
    /// migrations. `max_connections` sizes the Postgres pool. On Postgres
    /// the tables live in the default schema (see [`SqlRepo::connect_in`]).
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqlRepo, RepoError> {
        SqlRepo::connect_in(url, max_connections, super::schema::DEFAULT).await
    }

    /// [`SqlRepo::connect`] with permaproxy's Postgres tables in `schema`
    /// (created when missing; an earlier release's tables in `public` are
    /// moved there). SQLite ignores it.
    pub async fn connect_in(
        url: &str,
        max_connections: u32,
        schema: &str,
    ) -> Result<SqlRepo, RepoError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).ok_or_else(|| {
            RepoError::Corrupt(format!("{url:?} is neither sqlite: nor postgres://"))
        })?;
        let repo = match dialect {
            Dialect::Sqlite => {
                let (url, memory) = sqlite_url(url);
                let opts: AnyConnectOptions = url.parse()?;
                // An in-memory database lives in one connection.
                let readers = if memory { 1 } else { 4 };
                let write = pool_options(dialect, 1, None)
                    .connect_with(opts.clone())
                    .await?;
                let read = if memory {
                    write.clone()
                } else {
                    pool_options(dialect, readers, None)
                        .connect_with(opts)
                        .await?
                };
                SqlRepo {
                    dialect,
                    read,
                    write,
                    purge: false,
                }
            }
            Dialect::Postgres => {
                let opts: AnyConnectOptions = url.parse()?;
                let pool = pool_options(dialect, max_connections.max(2), Some(schema.into()))
                    .connect_with(opts)
                    .await?;
                super::schema::prepare(&pool, schema, &MIGRATOR).await?;
                SqlRepo {
                    dialect,
                    read: pool.clone(),
                    write: pool,
                    purge: false,
                }
            }
        };
        MIGRATOR.run(&repo.write).await?;
        Ok(repo)
    }

    /// Queue CDN purges with deletes (a provider is configured).
    pub fn with_cdn_purge(mut self, on: bool) -> SqlRepo {
        self.purge = on;
        self
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, RepoError> {
        Ok(self.write.begin_with(self.dialect.begin_write()).await?)
    }
}

/// The URL sqlx is given: files are created when missing; `sqlite::memory:`
/// (tests) is one private database.
fn sqlite_url(url: &str) -> (String, bool) {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return (url.to_string(), true);
    }
    if url.contains("mode=") {
        return (url.to_string(), false);
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}mode=rwc"), false)
}

#[async_trait]
impl Repo for SqlRepo {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.read.execute("SELECT 1").await?;
        Ok(())
    }

    async fn hand_out(&self, batch: &HandOut) -> Result<Vec<ImageRecord>, RepoError> {
        self.hand_out_rows(batch).await
    }

    async fn get(&self, key: &ImageKey) -> Result<Option<ImageRecord>, RepoError> {
        self.get_row(key).await
    }

    async fn mark_stored(
        &self,
        meta: &ImageMeta,
        dims: Option<(u32, u32)>,
    ) -> Result<Option<Marked>, RepoError> {
        self.mark_stored_row(meta, dims).await
    }

    async fn upsert_stored(
        &self,
        meta: &ImageMeta,
        requested_at: u64,
        trusted: bool,
    ) -> Result<bool, RepoError> {
        self.upsert_stored_row(meta, requested_at, trusted).await
    }

    async fn upsert_record(&self, rec: &ImageRecord) -> Result<(), RepoError> {
        self.upsert_record_row(rec).await
    }

    async fn mark_failed(&self, key: &ImageKey, reason: &str, now: u64) -> Result<(), RepoError> {
        self.mark_failed_row(key, reason, now).await
    }

    async fn requeue_lost(
        &self,
        key: &ImageKey,
        sha256: &str,
        now: u64,
    ) -> Result<bool, RepoError> {
        self.requeue_lost_row(key, sha256, now).await
    }

    async fn postpone(&self, key: &ImageKey, reason: &str, due_at: u64) -> Result<(), RepoError> {
        self.postpone_row(key, reason, due_at).await
    }

    async fn claim(
        &self,
        key: &ImageKey,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, RepoError> {
        self.claim_row(key, owner, now, until).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: u64,
        until: u64,
        limit: u32,
        own_too: bool,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.claim_due_rows(owner, now, until, limit, own_too).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        keys: &[ImageKey],
        until: u64,
    ) -> Result<(), RepoError> {
        self.renew_lease_rows(owner, keys, until).await
    }

    async fn record_hits(&self, hits: &[Hit]) -> Result<(), RepoError> {
        self.record_hit_rows(hits).await
    }

    async fn delete_images(
        &self,
        keys: &[ImageKey],
        reason: GoneReason,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.delete_image_rows(keys, reason).await
    }

    async fn delete_user_page(
        &self,
        user: &UserId,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.delete_user_page_rows(user, limit).await
    }

    async fn tombstone(&self, key: &ImageKey) -> Result<Option<Tombstone>, RepoError> {
        self.tombstone_row(key).await
    }

    async fn prune_tombstones(&self, before: u64, keep: u32) -> Result<u64, RepoError> {
        self.prune_tombstone_rows(before, keep).await
    }

    async fn enforce_user_limit(
        &self,
        user: &UserId,
        limit: u64,
        protect_since: u64,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.enforce_user_limit_rows(user, limit, protect_since)
            .await
    }

    async fn queued_deletes(&self, limit: u32) -> Result<Vec<String>, RepoError> {
        self.queued_delete_paths(limit).await
    }

    async fn forget_queued_delete(&self, path: &str) -> Result<(), RepoError> {
        self.forget_queued_path(path).await
    }

    async fn queue_delete(&self, path: &str) -> Result<(), RepoError> {
        self.queue_object_path(path).await
    }

    async fn remove_queued(
        &self,
        path: &str,
        store: &dyn crate::store::Store,
    ) -> Result<Removal, RepoError> {
        self.remove_queued_object(path, store).await
    }

    async fn existing(&self, keys: &[ImageKey]) -> Result<HashMap<ImageKey, bool>, RepoError> {
        self.existing_keys(keys).await
    }

    async fn set_private(&self, key: &ImageKey, private: bool) -> Result<bool, RepoError> {
        self.set_private_row(key, private).await
    }

    async fn claim_purges(
        &self,
        owner: &str,
        now: u64,
        lease_until: u64,
        limit: u32,
    ) -> Result<Vec<QueuedPurge>, RepoError> {
        self.claim_purge_rows(owner, now, lease_until, limit).await
    }

    async fn release_purges(&self, owner: &str) -> Result<(), RepoError> {
        self.release_purge_rows(owner).await
    }

    async fn finish_purges(&self, tags: &[String]) -> Result<(), RepoError> {
        self.finish_purge_rows(tags).await
    }

    async fn retry_purges(
        &self,
        tags: &[String],
        due_at: u64,
        error: &str,
    ) -> Result<(), RepoError> {
        self.retry_purge_rows(tags, due_at, error).await
    }

    async fn purge_stats(&self) -> Result<PurgeStats, RepoError> {
        self.purge_stats_row().await
    }

    async fn least_recent_stored(
        &self,
        before: u64,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.least_recent_stored_rows(before, limit).await
    }

    async fn stored_page(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.stored_rows_page(after, limit).await
    }

    async fn user_images(
        &self,
        user: &UserId,
        after: Option<&ImageId>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.user_image_rows(user, after, limit).await
    }

    async fn users(
        &self,
        prefix: &str,
        after: Option<&UserId>,
        limit: u32,
    ) -> Result<Vec<UserTotal>, RepoError> {
        self.user_totals(prefix, after, limit).await
    }

    async fn failed(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>, RepoError> {
        self.failed_rows(after, limit).await
    }

    async fn prune_failed(&self, before: u64, keep: u32) -> Result<u64, RepoError> {
        self.prune_failed_rows(before, keep).await
    }

    async fn totals(&self) -> Result<Totals, RepoError> {
        self.totals_row().await
    }

    async fn top_users(&self, n: u32) -> Result<Vec<UserTotal>, RepoError> {
        self.top_user_totals(n).await
    }

    async fn record_prediction(
        &self,
        prediction_id: &str,
        user: &UserId,
        now: u64,
    ) -> Result<(), RepoError> {
        self.record_prediction_row(prediction_id, user, now).await
    }

    async fn prediction_user(&self, prediction_id: &str) -> Result<Option<UserId>, RepoError> {
        self.prediction_user_row(prediction_id).await
    }

    async fn capture_webhook(
        &self,
        webhook_id: Option<&str>,
        batch: &HandOut,
    ) -> Result<Option<Vec<ImageRecord>>, RepoError> {
        self.capture_webhook_rows(webhook_id, batch).await
    }

    async fn prune_webhooks(&self, before: u64) -> Result<u64, RepoError> {
        self.prune_webhook_rows(before).await
    }

    async fn meta_get(&self, name: &str) -> Result<Option<String>, RepoError> {
        self.meta_value(name).await
    }

    async fn meta_set(&self, name: &str, value: &str) -> Result<(), RepoError> {
        self.set_meta_value(name, value).await
    }

    async fn get_variant(
        &self,
        key: &ImageKey,
        variant_key: &str,
    ) -> Result<Option<VariantRecord>, RepoError> {
        self.variant_row(key, variant_key).await
    }

    async fn record_variant(&self, v: &VariantRecord, limit: u64) -> Result<VariantPut, RepoError> {
        self.record_variant_row(v, limit).await
    }

    async fn record_variant_hits(&self, hits: &[VariantHit]) -> Result<(), RepoError> {
        self.record_variant_hit_rows(hits).await
    }

    async fn variant_bytes(
        &self,
        keys: &[ImageKey],
    ) -> Result<std::collections::HashMap<ImageKey, u64>, RepoError> {
        self.variant_bytes_of(keys).await
    }

    async fn queued_variant_deletes(&self, keys: &[ImageKey]) -> Result<Vec<String>, RepoError> {
        self.queued_variant_paths(keys).await
    }

    async fn variant_count(&self, key: &ImageKey) -> Result<u64, RepoError> {
        self.variant_count_of(key).await
    }

    async fn forget_variant(&self, key: &ImageKey, variant_key: &str) -> Result<(), RepoError> {
        self.forget_variant_row(key, variant_key).await
    }
}
