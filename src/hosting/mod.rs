//! The hosting engine, as a facade. Its parts (metadata, bytes, the memory
//! cache, the downloader) are private, and callers say what they want:
//! host these sources, open this image, delete this user. The rule that
//! memory, metadata and bytes agree lives here and nowhere else.
//!
//! Each file answers one question:
//! - [`handout`]: which hosted URLs may a response carry?
//! - [`download`]: how does a source become stored bytes, exactly once?
//! - [`lookup`]: where is a hosted image served from?
//! - [`cleanup`]: what is deleted, and how do deletes reach every part?
//! - [`maintenance`]: what runs in the background (takeover, flushes)?
//! - [`upgrade`]: how does a store written by an older version come in?
//! - [`variants`]: where is a variant (issue 14) answered from?
//! - [`transcoding`]: how is a variant made once, on a bounded pool, and
//!   what happens to an image's bytes as it is stored?

mod admin_ops;
mod budget;
mod cleanup;
mod cpu_pool;
mod download;
mod handout;
mod hits;
mod lookup;
mod maintenance;
mod purges;
mod queries;
mod transcoding;
mod upgrade;
mod variants;
mod webhooks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::cache::ImageCache;
use crate::config::{Config, StorageBackend};
use crate::fetch::{FetchError, Fetcher};
use crate::ids::ImageKey;
use crate::metrics;
use crate::repo::{Repo, RepoError, SqlRepo};
use crate::store::{Store, StoreError};

pub use admin_ops::CleanupPreview;
pub use cleanup::{cleanup_plan, run_cleanup, walk_cleanup_plan, CleanupReport};
pub use download::SharedResult;
pub use lookup::Lookup;
pub use upgrade::{import_legacy, reindex, ImportError, ReindexReport};
pub use variants::{VariantFail, VariantLookup};
pub use webhooks::Capture;

#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("storage failed: {message}")]
    Store { message: String, full: bool },
    #[error("database failed: {0}")]
    Database(String),
    /// The image was deleted while its download ran; the bytes were removed.
    #[error("deleted while it was being downloaded")]
    Deleted,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RepoError> for HostError {
    fn from(e: RepoError) -> HostError {
        metrics::get()
            .storage_errors
            .with_label_values(&["database"])
            .inc();
        HostError::Database(e.to_string())
    }
}

pub struct Hosting {
    cfg: Arc<Config>,
    repo: Arc<dyn Repo>,
    store: Arc<dyn Store>,
    cache: ImageCache,
    fetcher: Fetcher,
    inflight: Mutex<HashMap<ImageKey, SharedResult>>,
    hits: hits::Hits,
    /// Bumped by every local delete, so a read that raced one does not
    /// leave the deleted bytes in memory.
    deletes: AtomicU64,
    cleanup_lock: tokio::sync::Mutex<()>,
    /// One eviction for the disk bounds at a time, and the byte total it
    /// works from.
    budget_lock: tokio::sync::Mutex<()>,
    stored_bytes: budget::StoredBytes,
    purger: purges::Purger,
    /// The one-time import of an older store could not list it yet.
    import_pending: AtomicBool,
    replica_id: String,
    /// Variants (issue 14): remembered resolutions, the transcode pool and
    /// the makes in flight.
    variants: variants::VariantState,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hosting {
    /// Connects the database (migrating it), opens the store, imports a
    /// store written by an older version on the first start, and sweeps
    /// staging files left by a crash.
    pub async fn open(cfg: Arc<Config>) -> Result<Arc<Hosting>, String> {
        let store = open_store(&cfg)?;
        let repo = open_repo(&cfg).await?;
        Hosting::open_with(cfg, repo, store).await
    }

    /// The seam for in-process tests: any repo, any store.
    pub async fn open_with(
        cfg: Arc<Config>,
        repo: Arc<dyn Repo>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Hosting>, String> {
        let root = &cfg.storage.path;
        let staging = root.join("~staging");
        let state_dir = root.join("~state");
        for dir in [root, &staging, &state_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("IMAGE_STORAGE_PATH: cannot create {}: {e}", dir.display()))?;
        }
        sweep_staging(&staging);
        let import_pending = match upgrade::import_legacy(&cfg, repo.as_ref(), store.as_ref()).await
        {
            Ok(()) => false,
            // Start anyway (a bucket outage must not keep replicas down);
            // the maintenance loop tries again.
            Err(e @ upgrade::ImportError::Store(_)) => {
                tracing::error!(error = %e, "store not imported yet; will retry");
                true
            }
            Err(e) => return Err(e.to_string()),
        };
        let fetcher = Fetcher::new(&cfg, &staging).map_err(|e| format!("HTTP client: {e}"))?;
        let variants = variants::VariantState::new(&cfg.variants, cfg.download.max_pixels)?;
        let hosting = Arc::new(Hosting {
            variants,
            replica_id: replica_id(&state_dir),
            cache: ImageCache::new(cfg.storage.memory_cache_bytes),
            cfg,
            repo,
            store,
            fetcher,
            inflight: Mutex::new(HashMap::new()),
            hits: hits::Hits::default(),
            deletes: AtomicU64::new(0),
            cleanup_lock: tokio::sync::Mutex::new(()),
            budget_lock: tokio::sync::Mutex::new(()),
            stored_bytes: budget::StoredBytes::default(),
            purger: purges::Purger::new(),
            import_pending: AtomicBool::new(import_pending),
        });
        hosting.publish_gauges().await;
        Ok(hosting)
    }

    /// Tries the one-time import again, if a bucket outage held it up.
    pub async fn retry_import(&self) {
        if !self.import_pending.load(Ordering::SeqCst) {
            return;
        }
        match upgrade::import_legacy(&self.cfg, self.repo.as_ref(), self.store.as_ref()).await {
            Ok(()) => {
                self.import_pending.store(false, Ordering::SeqCst);
                tracing::info!("store imported into the database");
            }
            Err(e) => tracing::warn!(error = %e, "store still not imported; will retry"),
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Readiness: can a byte be written, and does the database answer?
    pub async fn ready(&self) -> Result<(), String> {
        self.store.probe().await.map_err(|e| e.to_string())?;
        self.repo.ping().await.map_err(|e| e.to_string())
    }

    pub fn free_bytes(&self) -> Option<u64> {
        self.store.free_bytes()
    }

    /// The free space kept on the volume: IMAGE_MIN_FREE_BYTES, or its
    /// default share of the volume.
    pub fn free_floor(&self) -> u64 {
        crate::lifecycle::free_floor(self.cfg.lifecycle.min_free_bytes, self.store.volume_bytes())
    }

    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    pub fn database_name(&self) -> &'static str {
        self.repo.dialect().name()
    }
}

pub fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    Ok(match cfg.storage.backend {
        StorageBackend::Disk => Arc::new(
            crate::store::disk::DiskStore::new(&cfg.storage.path)
                .map_err(|e| format!("IMAGE_STORAGE_PATH: {e}"))?,
        ),
        StorageBackend::S3 => {
            let s3 = cfg
                .storage
                .s3
                .as_ref()
                .ok_or("IMAGE_STORAGE_BACKEND: s3 needs S3_BUCKET")?;
            Arc::new(crate::store::object::ObjectBackend::s3(s3)?)
        }
    })
}

pub async fn open_repo(cfg: &Config) -> Result<Arc<dyn Repo>, String> {
    std::fs::create_dir_all(&cfg.storage.path).map_err(|e| {
        format!(
            "IMAGE_STORAGE_PATH: cannot create {}: {e}",
            cfg.storage.path.display()
        )
    })?;
    let db = &cfg.database;
    let repo = SqlRepo::connect_in(&db.url, db.max_connections, &db.schema)
        .await
        .map_err(|e| {
            format!(
                "{} ({}): {e}",
                db.url_from,
                crate::config::redact_url(&db.url)
            )
        })?;
    Ok(Arc::new(repo.with_cdn_purge(cfg.cdn.purging())))
}

fn store_error(e: StoreError) -> HostError {
    let full = matches!(e, StoreError::Full);
    metrics::get()
        .storage_errors
        .with_label_values(&[if full { "full" } else { "io" }])
        .inc();
    HostError::Store {
        message: e.to_string(),
        full,
    }
}

/// A stable id for this replica: Railway's replica id when present,
/// otherwise one generated once and kept in the state folder, so a restart
/// finds the leases of the process it replaces.
fn replica_id(state_dir: &Path) -> String {
    if let Ok(id) = std::env::var("RAILWAY_REPLICA_ID") {
        if !id.is_empty() {
            return crate::ids::UserId::sanitize(&id).to_string();
        }
    }
    let path = state_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let id = format!("r{:016x}", rand::random::<u64>());
    let _ = crate::store::disk::write_atomic(&path, id.as_bytes());
    id
}

/// Leftover staging files are from downloads a crash interrupted; their
/// pending rows bring them back.
fn sweep_staging(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub fn staging_dir(cfg: &Config) -> PathBuf {
    cfg.storage.path.join("~staging")
}

#[cfg(test)]
mod tests;
