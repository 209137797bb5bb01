//! Hot images in memory, bounded in bytes. Entries share one `Bytes` buffer,
//! so serving from memory copies nothing.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use moka::future::Cache;

use crate::ids::ImageKey;
use crate::metrics;
use crate::store::ImageMeta;

#[derive(Clone)]
pub struct CachedImage {
    pub bytes: Bytes,
    pub meta: Arc<ImageMeta>,
    /// When it was read from the store.
    pub loaded: Instant,
}

#[derive(Clone)]
pub struct ImageCache {
    inner: Option<Cache<ImageKey, CachedImage>>,
    max_item: u64,
}

/// Per-entry bookkeeping cost, so many tiny images cannot exceed the budget.
const ENTRY_OVERHEAD: u32 = 256;

impl ImageCache {
    pub fn new(capacity_bytes: u64) -> ImageCache {
        if capacity_bytes == 0 {
            return ImageCache {
                inner: None,
                max_item: 0,
            };
        }
        let inner = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_k: &ImageKey, v: &CachedImage| {
                u32::try_from(v.bytes.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .build();
        ImageCache {
            inner: Some(inner),
            // One image may take at most an eighth of the cache, so a few
            // large images cannot flush all the small hot ones.
            max_item: capacity_bytes / 8,
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn admits(&self, size: u64) -> bool {
        self.inner.is_some() && size <= self.max_item
    }

    /// An image itself, never a variant's bytes cached under an alias key:
    /// the image route must not serve those, unsigned, by the alias (issue
    /// 20, finding 6).
    pub async fn get_image(&self, key: &ImageKey) -> Option<CachedImage> {
        let hit = self.inner.as_ref()?.get(key).await?;
        (hit.meta.variant.is_none() && hit.meta.key == *key).then_some(hit)
    }

    /// Whatever is held under `key`, image or variant (bookkeeping only,
    /// never to serve).
    pub async fn peek(&self, key: &ImageKey) -> Option<CachedImage> {
        self.inner.as_ref()?.get(key).await
    }

    /// A variant's bytes, by the alias key they are cached under.
    pub async fn get_variant(&self, alias: &ImageKey) -> Option<CachedImage> {
        let hit = self.inner.as_ref()?.get(alias).await?;
        hit.meta.variant.is_some().then_some(hit)
    }

    pub async fn insert(&self, key: ImageKey, image: CachedImage) {
        if let Some(c) = &self.inner {
            if self.admits(image.bytes.len() as u64) {
                c.insert(key, image).await;
                // moka counts sizes lazily: settle them (and any eviction
                // this insert caused) so the gauges are not left at 0.
                c.run_pending_tasks().await;
                self.publish(c);
            }
        }
    }

    pub async fn invalidate(&self, key: &ImageKey) {
        if let Some(c) = &self.inner {
            c.invalidate(key).await;
            c.run_pending_tasks().await;
            self.publish(c);
        }
    }

    fn publish(&self, c: &Cache<ImageKey, CachedImage>) {
        metrics::get()
            .memory_cache_bytes
            .set(c.weighted_size() as i64);
        metrics::get()
            .memory_cache_entries
            .set(c.entry_count() as i64);
    }

    /// The keys held now, each with the image it belongs to (itself, or
    /// for a variant the image it was made from), to check against the
    /// database.
    pub fn entries(&self) -> Vec<(ImageKey, ImageKey)> {
        match &self.inner {
            Some(c) => c
                .iter()
                .map(|(k, v)| ((*k).clone(), v.meta.key.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Drops the variants of these images (issue 14): they are cached
    /// under alias keys, so they are found by the image they belong to.
    /// One pass over the cache; deletes are rare and come in batches.
    pub async fn invalidate_variants_of(&self, images: &std::collections::HashSet<ImageKey>) {
        let Some(c) = &self.inner else {
            return;
        };
        let stale: Vec<Arc<ImageKey>> = c
            .iter()
            .filter(|(_, v)| v.meta.variant.is_some() && images.contains(&v.meta.key))
            .map(|(k, _)| k)
            .collect();
        if stale.is_empty() {
            return;
        }
        for k in stale {
            c.invalidate(&*k).await;
        }
        c.run_pending_tasks().await;
        self.publish(c);
    }
}
