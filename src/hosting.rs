//! The hosting engine: turns sources into stored images exactly once, and
//! answers where a hosted image can be served from.
//!
//! Every download runs in its own task, shared by everyone who needs that
//! image (single flight): a generate call, a first hit, or recovery. A client
//! that stops waiting never cancels it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::{CachedImage, ImageCache};
use crate::config::{Config, PersistMode, StorageBackend};
use crate::fetch::{FetchError, Fetcher};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::Format;
use crate::index::Index;
use crate::journal::{Journal, PendingEntry};
use crate::metrics;
use crate::rewrite::Replacement;
use crate::sources::Source;
use crate::store::{ImageMeta, Store, StoreError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("storage failed: {message}")]
    Store { message: String, full: bool },
    #[error("internal error: {0}")]
    Internal(String),
}

type SharedResult = Shared<BoxFuture<'static, Result<Arc<ImageMeta>, HostError>>>;

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
    /// The store could not be asked (say, the bucket is down): unknown,
    /// which is not the same as missing.
    StoreDown(String),
    Missing,
}

pub struct Hosting {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub index: Arc<Index>,
    pub cache: ImageCache,
    pub journal: Arc<Journal>,
    fetcher: Fetcher,
    inflight: Mutex<HashMap<ImageKey, SharedResult>>,
    pub state_dir: PathBuf,
    /// Names this replica's shared state in an object store.
    pub replica_id: String,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hosting {
    /// Opens the store, rebuilds the index from it, replays the journal and
    /// sweeps staging files left by a crash.
    pub async fn open(cfg: Arc<Config>) -> Result<Arc<Hosting>, String> {
        let root = cfg.storage_path.clone();
        let staging = root.join("~staging");
        let state_dir = root.join("~state");
        for dir in [&root, &staging, &state_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("IMAGE_STORAGE_PATH: cannot create {}: {e}", dir.display()))?;
        }
        sweep_staging(&staging);
        let store: Arc<dyn Store> = match cfg.storage_backend {
            StorageBackend::Disk => Arc::new(
                crate::store::disk::DiskStore::new(&root)
                    .map_err(|e| format!("IMAGE_STORAGE_PATH: {e}"))?,
            ),
            StorageBackend::S3 => {
                let s3 = cfg
                    .s3
                    .as_ref()
                    .ok_or("IMAGE_STORAGE_BACKEND: s3 needs S3_BUCKET")?;
                Arc::new(crate::store::s3::S3Store::new(s3)?)
            }
        };
        let metas = match store.list().await {
            Ok(m) => m,
            Err(e) if cfg.storage_backend == StorageBackend::S3 => {
                // The bucket may be briefly unreachable; start anyway and let
                // the maintenance loop fill the index once it answers.
                tracing::error!(error = %e, "cannot list the bucket at start; will retry");
                Vec::new()
            }
            Err(e) => return Err(format!("cannot list the store: {e}")),
        };
        let index = Arc::new(Index::build(&state_dir, metas));
        let journal = Arc::new(
            Journal::open(&state_dir).map_err(|e| format!("cannot open the journal: {e}"))?,
        );
        let fetcher = Fetcher::new(&cfg, &staging).map_err(|e| format!("HTTP client: {e}"))?;
        let replica_id = replica_id(&state_dir);
        let hosting = Arc::new(Hosting {
            replica_id,
            cache: ImageCache::new(cfg.memory_cache_bytes),
            cfg,
            store,
            index,
            journal,
            fetcher,
            inflight: Mutex::new(HashMap::new()),
            state_dir,
        });
        hosting.publish_pending();
        Ok(hosting)
    }

    fn publish_pending(&self) {
        metrics::get()
            .pending_downloads
            .set(self.journal.pending_count() as i64);
    }

    /// Downloads every image handed out but not stored when the process last
    /// stopped, without waiting for anyone to ask.
    pub fn recover(self: &Arc<Self>) -> usize {
        let pending = self.journal.all_pending();
        let mut started = 0;
        for p in pending {
            let Some(key) = p.key() else { continue };
            if self.index.get(&key).is_some() {
                self.journal.mark_done(&key);
                continue;
            }
            if lock(&self.inflight).contains_key(&key) {
                continue;
            }
            tracing::info!(image = %key, source = %p.source, "recovering a pending download");
            drop(self.ensure(key, p.source, p.prediction_id));
            started += 1;
        }
        self.publish_pending();
        started
    }

    /// The single-flight download of one image. Already stored: ready now.
    pub fn ensure(
        self: &Arc<Self>,
        key: ImageKey,
        source: String,
        prediction_id: Option<String>,
    ) -> SharedResult {
        if let Some(e) = self.index.get(&key) {
            let meta = e.meta.clone();
            return async move { Ok(meta) }.boxed().shared();
        }
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&key) {
            return f.clone();
        }
        let this = self.clone();
        let task_key = key.clone();
        let handle = tokio::spawn(async move {
            let result = this
                .download_and_store(&task_key, &source, prediction_id)
                .await;
            this.settle(&task_key, &source, &result);
            lock(&this.inflight).remove(&task_key);
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

    async fn download_and_store(
        &self,
        key: &ImageKey,
        source: &str,
        prediction_id: Option<String>,
    ) -> Result<Arc<ImageMeta>, HostError> {
        let downloaded = if source.starts_with("data:") {
            self.fetcher.from_data_uri(source).await?
        } else {
            let url = url::Url::parse(source)
                .map_err(|e| FetchError::Rejected(format!("bad source URL: {e}")))?;
            self.fetcher.fetch(&url).await?
        };
        let meta = ImageMeta {
            id: key.id.to_string(),
            user_id: key.user.to_string(),
            format: downloaded.format,
            content_type: downloaded.format.content_type().to_string(),
            size: downloaded.size,
            sha256: downloaded.sha256.clone(),
            source_url: (!source.starts_with("data:")).then(|| source.to_string()),
            prediction_id,
            created_at: now_ms(),
        };
        self.store
            .put(&downloaded.staged, &meta)
            .await
            .map_err(store_error)?;
        self.index.insert(meta.clone(), now_ms());
        crate::lifecycle::enforce_user_limit(self, &key.user, key).await;
        Ok(Arc::new(meta))
    }

    fn settle(&self, key: &ImageKey, source: &str, result: &Result<Arc<ImageMeta>, HostError>) {
        match result {
            Ok(meta) => {
                tracing::info!(image = %key, bytes = meta.size, format = meta.format.ext(), "image stored");
                self.journal.mark_done(key);
            }
            // Storage trouble is not the source's fault: the entry stays
            // pending and the maintenance loop tries again while the source
            // lives.
            Err(e @ (HostError::Store { .. } | HostError::Fetch(FetchError::Storage { .. }))) => {
                tracing::error!(image = %key, source = %redact_data(source), error = %e, "image not stored for lack of storage; will retry");
            }
            Err(e) => {
                tracing::warn!(image = %key, source = %redact_data(source), error = %e, "image not stored");
                self.journal.mark_failed(key, &e.to_string());
            }
        }
        self.publish_pending();
    }

    /// Hosts the sources of one response. Returns a replacement for every
    /// source whose hosted URL is safe to hand out; the rest keep their
    /// original URL.
    pub async fn host_for_response(
        self: &Arc<Self>,
        user: &UserId,
        sources: Vec<(String, Source)>,
        prediction_id: Option<String>,
        base: &str,
    ) -> HashMap<String, Replacement> {
        let mut seen = std::collections::HashSet::new();
        let keyed: Vec<(String, Source, ImageKey)> = sources
            .into_iter()
            .filter(|(v, _)| seen.insert(v.clone()))
            .map(|(v, s)| {
                let key = ImageKey::new(user.clone(), ImageId::for_source(&v));
                (v, s, key)
            })
            .collect();
        let journaled = self.journal_urls(&keyed, &prediction_id).await;
        let mode = self.cfg.persist_mode;
        let mut waits = Vec::new();
        let mut out = HashMap::new();
        for (value, source, key) in keyed {
            if let Some(e) = self.index.get(&key) {
                out.insert(value, replacement(base, &key, &e.meta));
                continue;
            }
            let is_data = matches!(source, Source::Data);
            if is_data || mode == PersistMode::BeforeResponse {
                let fut = self.ensure(key.clone(), value.clone(), prediction_id.clone());
                waits.push((value, key, fut, is_data));
            } else if journaled {
                if mode == PersistMode::Background {
                    drop(self.ensure(key.clone(), value.clone(), prediction_id.clone()));
                }
                out.insert(value.clone(), pending_replacement(base, &key, &value));
            }
        }
        let all = futures::future::join_all(waits.iter().map(|w| w.2.clone()));
        let _ = tokio::time::timeout(self.cfg.persist_timeout, all).await;
        for (value, key, fut, is_data) in waits {
            match fut.now_or_never() {
                Some(Ok(meta)) => {
                    out.insert(value, replacement(base, &key, &meta));
                }
                Some(Err(_)) => {}
                // Still downloading after the timeout: it is journaled, so
                // the hosted URL will work; hand it out.
                None if journaled && !is_data => {
                    out.insert(value.clone(), pending_replacement(base, &key, &value));
                }
                None => {}
            }
        }
        let hosted = out.len() as u64;
        metrics::get()
            .rewritten_urls
            .with_label_values(&["hosted"])
            .inc_by(hosted);
        out
    }

    /// Makes the URL sources durable in the journal before any hosted URL is
    /// handed out. False when the journal could not be written.
    async fn journal_urls(
        &self,
        keyed: &[(String, Source, ImageKey)],
        prediction_id: &Option<String>,
    ) -> bool {
        let entries: Vec<PendingEntry> = keyed
            .iter()
            .filter(|(_, s, k)| matches!(s, Source::Url(_)) && self.index.get(k).is_none())
            .map(|(v, _, k)| PendingEntry {
                user: k.user.to_string(),
                id: k.id.to_string(),
                source: v.clone(),
                prediction_id: prediction_id.clone(),
                at: now_ms(),
            })
            .collect();
        if entries.is_empty() {
            return true;
        }
        match self.journal.add_pending(entries).await {
            Ok(()) => {
                self.publish_pending();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; hosted URLs withheld");
                metrics::get()
                    .storage_errors
                    .with_label_values(&["journal"])
                    .inc();
                false
            }
        }
    }

    /// Finds where a hosted image can be served from, waiting for a pending
    /// download when there is one.
    pub async fn lookup(self: &Arc<Self>, key: &ImageKey) -> Lookup {
        if let Some(hit) = self.cache.get(key).await {
            if !ImageCache::needs_revalidation(&hit, self.cfg.cache_revalidate)
                || self.cfg.storage_backend == StorageBackend::Disk
            {
                return Lookup::Memory(hit);
            }
            return self.revalidate(key, hit).await;
        }
        if let Some(e) = self.index.get(key) {
            return Lookup::Stored(e.meta.clone());
        }
        if let Some(p) = self.journal.pending(key) {
            if self.cfg.hosting_enabled {
                return self.wait_pending(key, p).await;
            }
        }
        if let Some(f) = self.journal.failed(key) {
            return Lookup::Unavailable(f.reason);
        }
        // A disk store has one writer, this process, and the index mirrors
        // it; only a shared bucket can hold images the index has not seen.
        // So a 404 on disk costs no file-system probe.
        if self.cfg.storage_backend == StorageBackend::Disk {
            return Lookup::Missing;
        }
        match self.store.head(key).await {
            Ok(Some(meta)) => {
                let entry = self.index.insert(meta.clone(), now_ms());
                Lookup::Stored(entry.map_or_else(|| Arc::new(meta), |e| e.meta.clone()))
            }
            Ok(None) => Lookup::Missing,
            Err(e) => Lookup::StoreDown(e.to_string()),
        }
    }

    async fn wait_pending(self: &Arc<Self>, key: &ImageKey, p: PendingEntry) -> Lookup {
        let fut = self.ensure(key.clone(), p.source.clone(), p.prediction_id.clone());
        match tokio::time::timeout(self.cfg.persist_timeout, fut).await {
            Ok(Ok(meta)) => Lookup::Fetched(meta),
            Ok(Err(e)) => Lookup::Unavailable(e.to_string()),
            Err(_) => Lookup::Redirect(p.source),
        }
    }

    async fn revalidate(&self, key: &ImageKey, hit: CachedImage) -> Lookup {
        match self.store.head(key).await {
            Ok(Some(_)) => {
                let fresh = CachedImage {
                    loaded: std::time::Instant::now(),
                    ..hit.clone()
                };
                self.cache.insert(key.clone(), fresh).await;
                Lookup::Memory(hit)
            }
            Ok(None) => {
                self.cache.invalidate(key).await;
                self.index.remove(key);
                Lookup::Missing
            }
            // The store is down: serving what memory holds beats failing.
            Err(_) => Lookup::Memory(hit),
        }
    }

    /// Brings the index in line with the store: images other replicas
    /// stored appear, images they deleted go.
    pub async fn refresh_from_store(&self) -> Result<(), StoreError> {
        let started = now_ms();
        let listed = self.store.list().await?;
        let keys: std::collections::HashSet<ImageKey> =
            listed.iter().filter_map(ImageMeta::key).collect();
        for meta in listed {
            if let Some(key) = meta.key() {
                if self.index.get(&key).is_none() {
                    // Noticing an image is not a request for it: like a
                    // rebuilt index, count it as requested when stored, and
                    // let the shared access times raise that.
                    let stored = meta.created_at;
                    self.index.insert(meta, stored);
                }
            }
        }
        for row in self.index.rows() {
            if row.meta.created_at < started && !keys.contains(&row.key) {
                self.index.remove(&row.key);
                self.cache.invalidate(&row.key).await;
            }
        }
        Ok(())
    }

    /// Publishes this replica's access times where every replica sees them.
    pub async fn share_access(&self) {
        if self.cfg.storage_backend != StorageBackend::S3 {
            return;
        }
        let name = format!("access/{}.json", self.replica_id);
        if let Err(e) = self.store.put_state(&name, self.index.access_json()).await {
            tracing::warn!(error = %e, "could not share access times");
        }
    }

    /// Takes in the newest access times every replica has published, so
    /// cleanup never deletes an image another replica is serving.
    pub async fn merge_shared_access(&self) {
        match self.store.list_state("access/").await {
            Ok(blobs) => {
                for b in blobs {
                    if let Ok(map) = serde_json::from_slice::<HashMap<String, u64>>(&b) {
                        self.index.merge_access(&map);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read shared access times"),
        }
    }

    /// Deletes an image everywhere: index, memory, store and journal.
    pub async fn delete(&self, key: &ImageKey) -> Result<bool, StoreError> {
        let meta = match self.index.get(key) {
            Some(e) => Some(e.meta.clone()),
            None => self.store.head(key).await?.map(Arc::new),
        };
        // Files first: a lookup that misses the index falls back to the
        // store, and would put the image back while its files still exist.
        if let Some(m) = &meta {
            self.store.delete(m).await?;
        }
        self.index.remove(key);
        self.cache.invalidate(key).await;
        self.journal.forget(key);
        self.publish_pending();
        Ok(meta.is_some())
    }
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

fn redact_data(source: &str) -> &str {
    if source.starts_with("data:") {
        "data:..."
    } else {
        source
    }
}

fn replacement(base: &str, key: &ImageKey, meta: &ImageMeta) -> Replacement {
    Replacement {
        hosted_url: format!("{base}{}", key.hosted_path(meta.format)),
        size_bytes: Some(meta.size),
        hosted_at: rfc3339(meta.created_at),
    }
}

/// Before the bytes arrive the format is unknown, so the source URL's
/// extension is a guess. Serving looks images up by id, so a wrong guess
/// still serves the right bytes with the right Content-Type.
fn pending_replacement(base: &str, key: &ImageKey, source: &str) -> Replacement {
    Replacement {
        hosted_url: format!("{base}{}", key.hosted_path(guess_format(source))),
        size_bytes: None,
        hosted_at: rfc3339(now_ms()),
    }
}

/// A stable id for this replica: Railway's replica id when present,
/// otherwise one generated once and kept in the state folder.
fn replica_id(state_dir: &std::path::Path) -> String {
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
/// journal entries bring them back.
fn sweep_staging(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

pub fn guess_format(source: &str) -> Format {
    let path = source.split(['?', '#']).next().unwrap_or("");
    path.rsplit_once('.')
        .and_then(|(_, ext)| Format::from_ext(&ext.to_ascii_lowercase()))
        .unwrap_or(Format::Png)
}
