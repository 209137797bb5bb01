//! The in-memory index of stored images, with last-request times.
//!
//! The store is the truth; this index is rebuilt from it at every start.
//! Request times change on every hit, so they are kept in memory and written
//! in batches to `access.json` (atomically), never once per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::ids::{ImageKey, UserId};
use crate::metrics;
use crate::store::ImageMeta;

pub struct Entry {
    pub meta: Arc<ImageMeta>,
    accessed_ms: AtomicU64,
}

impl Entry {
    pub fn accessed_ms(&self) -> u64 {
        self.accessed_ms.load(Ordering::Relaxed)
    }
}

/// A row for lifecycle decisions and the admin API.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: ImageKey,
    pub meta: Arc<ImageMeta>,
    pub accessed_ms: u64,
}

pub struct Index {
    map: RwLock<HashMap<ImageKey, Arc<Entry>>>,
    access_path: PathBuf,
    dirty: AtomicBool,
    /// Sum of image sizes in `map`, kept as entries come and go so totals
    /// never walk the whole index. Changed only under the map's write lock.
    bytes: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Index {
    /// Builds the index from the store's list, with access times from the
    /// last flush. An image with no recorded time counts as requested when
    /// it was stored.
    pub fn build(state_dir: &Path, metas: Vec<ImageMeta>) -> Index {
        let access_path = state_dir.join("access.json");
        let times: HashMap<String, u64> = std::fs::read(&access_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut map = HashMap::new();
        for meta in metas {
            let Some(key) = meta.key() else { continue };
            let accessed = times
                .get(&key.to_string())
                .copied()
                .unwrap_or(meta.created_at)
                .max(meta.created_at);
            map.insert(
                key,
                Arc::new(Entry {
                    meta: Arc::new(meta),
                    accessed_ms: AtomicU64::new(accessed),
                }),
            );
        }
        let bytes = map.values().map(|e| e.meta.size).sum();
        let index = Index {
            map: RwLock::new(map),
            access_path,
            dirty: AtomicBool::new(false),
            bytes: AtomicU64::new(bytes),
        };
        index.publish_totals();
        index
    }

    pub fn get(&self, key: &ImageKey) -> Option<Arc<Entry>> {
        read(&self.map).get(key).cloned()
    }

    /// Records a request. Storing counts as a request.
    pub fn touch(&self, key: &ImageKey, now_ms: u64) {
        if let Some(e) = read(&self.map).get(key) {
            e.accessed_ms.fetch_max(now_ms, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    pub fn insert(&self, meta: ImageMeta, now_ms: u64) -> Option<Arc<Entry>> {
        let key = meta.key()?;
        let entry = Arc::new(Entry {
            meta: Arc::new(meta),
            accessed_ms: AtomicU64::new(now_ms),
        });
        {
            let mut map = write(&self.map);
            let replaced = map
                .insert(key, entry.clone())
                .map_or(0, |old| old.meta.size);
            self.bytes.fetch_add(entry.meta.size, Ordering::Relaxed);
            self.bytes.fetch_sub(replaced, Ordering::Relaxed);
        }
        self.dirty.store(true, Ordering::Relaxed);
        self.publish_totals();
        Some(entry)
    }

    pub fn remove(&self, key: &ImageKey) -> Option<Arc<Entry>> {
        let removed = {
            let mut map = write(&self.map);
            let removed = map.remove(key);
            if let Some(e) = &removed {
                self.bytes.fetch_sub(e.meta.size, Ordering::Relaxed);
            }
            removed
        };
        if removed.is_some() {
            self.dirty.store(true, Ordering::Relaxed);
            self.publish_totals();
        }
        removed
    }

    pub fn rows(&self) -> Vec<Row> {
        self.rows_where(|_| true)
    }

    pub fn user_rows(&self, user: &UserId) -> Vec<Row> {
        self.rows_where(|k| &k.user == user)
    }

    fn rows_where(&self, keep: impl Fn(&ImageKey) -> bool) -> Vec<Row> {
        read(&self.map)
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, e)| Row {
                key: k.clone(),
                meta: e.meta.clone(),
                accessed_ms: e.accessed_ms(),
            })
            .collect()
    }

    /// (images, bytes)
    pub fn totals(&self) -> (usize, u64) {
        let map = read(&self.map);
        (map.len(), self.bytes.load(Ordering::Relaxed))
    }

    fn publish_totals(&self) {
        let (count, bytes) = self.totals();
        metrics::get().stored_images.set(count as i64);
        metrics::get().stored_bytes.set(bytes as i64);
    }

    /// Access times as JSON, keyed `user/id`.
    pub fn access_json(&self) -> bytes::Bytes {
        let times: HashMap<String, u64> = read(&self.map)
            .iter()
            .map(|(k, e)| (k.to_string(), e.accessed_ms()))
            .collect();
        bytes::Bytes::from(serde_json::to_vec(&times).unwrap_or_default())
    }

    /// Raises access times to what another replica saw.
    pub fn merge_access(&self, times: &HashMap<String, u64>) {
        for (k, e) in read(&self.map).iter() {
            if let Some(t) = times.get(&k.to_string()) {
                e.accessed_ms.fetch_max(*t, Ordering::Relaxed);
            }
        }
    }

    /// Writes access times if anything changed since the last flush.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let json = self.access_json();
        let result = crate::store::disk::write_atomic(&self.access_path, &json);
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }
}
