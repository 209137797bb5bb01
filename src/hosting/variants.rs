//! Where a variant request (issue 14) is answered from.
//!
//! A hit never touches the database: the request's resolution (which
//! variant, or "the image itself") is remembered per (image, query,
//! negotiated format) and the variant's bytes sit in the same memory cache
//! as images, under an alias key. A miss costs the image's row, then the
//! variant's row (both indexed), and only when that is missing too, one
//! make on the bounded pool ([`super::transcoding`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::transcoding::SharedMake;
use super::{Hosting, Lookup};
use crate::cache::CachedImage;
use crate::config::VariantsConfig;
use crate::ids::{ImageId, ImageKey};
use crate::image_format::Format;
use crate::metrics;
use crate::repo::ImageState;
use crate::store::{ImageMeta, StoreError};
use crate::variants::{self, Limits, OutputFormat, VariantSpec};

/// Resolutions remembered; each is a few hundred bytes.
const MEMO_ENTRIES: u64 = 100_000;
/// Refused makes (too large, undecodable) remembered, so a client retrying
/// one does not read the image again each time.
const REFUSED_ENTRIES: u64 = 10_000;
const REFUSED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Why a variant cannot be answered. Mapped to HTTP in `crate::error`.
#[derive(Debug, Clone)]
pub enum VariantFail {
    Missing,
    /// The image was deleted lately (finding 17).
    Gone(crate::repo::GoneReason),
    /// The image's download failed for good.
    Unavailable(String),
    /// The image is still downloading after IMAGE_PERSIST_TIMEOUT_MS.
    Redirect(String),
    StoreDown(String),
    /// The transcode pool and its queue are full.
    Busy,
    /// Over IMAGE_MAX_PIXELS or the memory budget.
    TooLarge(String),
    /// The stored bytes do not decode.
    Undecodable(String),
    Internal(String),
}

/// Where a variant request is answered from.
pub enum VariantLookup {
    Memory(CachedImage),
    Stored(Arc<ImageMeta>),
    /// The image itself, as without a query (same size and format, or a
    /// format that cannot be decoded here); `vary` when `format=auto`.
    Original {
        vary: bool,
    },
}

/// A request, as far as its answer depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RequestKey {
    pub key: ImageKey,
    pub spec: VariantSpec,
    /// `format=auto`: what `Accept` chose (AVIF, WebP or neither).
    pub negotiated: Option<Format>,
}

#[derive(Clone)]
enum Resolution {
    Original,
    /// The variant's metadata for this request (its `vary_accept` set),
    /// and its key in the memory cache.
    Variant(Arc<ImageMeta>, ImageKey),
}

pub(super) struct VariantState {
    pub(super) limits: Limits,
    pub(super) per_image: u64,
    /// Transcodes running at once: IMAGE_TRANSCODE_CONCURRENCY, on as
    /// many threads of their own.
    pub(super) compute: Arc<tokio::sync::Semaphore>,
    pub(super) threads: super::cpu_pool::CpuPool,
    /// Makes running or waiting: concurrency + IMAGE_TRANSCODE_QUEUE.
    pub(super) admission: Arc<tokio::sync::Semaphore>,
    pub(super) inflight: Mutex<HashMap<(ImageKey, String), SharedMake>>,
    memo: moka::sync::Cache<RequestKey, Resolution>,
    pub(super) refused: moka::sync::Cache<(ImageKey, String), VariantFail>,
    /// Variants served since the last flush, by (image, variant key): the
    /// last request time that eviction at IMAGE_VARIANTS_PER_IMAGE reads.
    hits: Mutex<HashMap<(ImageKey, String), u64>>,
}

impl VariantState {
    pub(super) fn new(cfg: &VariantsConfig, max_pixels: u64) -> Result<VariantState, String> {
        Ok(VariantState {
            threads: super::cpu_pool::CpuPool::new(cfg.concurrency)?,
            per_image: cfg.per_image,
            limits: Limits {
                max_pixels,
                max_memory_bytes: cfg.memory_bytes,
            },
            compute: Arc::new(tokio::sync::Semaphore::new(cfg.concurrency)),
            admission: Arc::new(tokio::sync::Semaphore::new(cfg.concurrency + cfg.queue)),
            inflight: Mutex::new(HashMap::new()),
            memo: moka::sync::Cache::new(MEMO_ENTRIES),
            hits: Mutex::new(HashMap::new()),
            refused: moka::sync::Cache::builder()
                .max_capacity(REFUSED_ENTRIES)
                .time_to_live(REFUSED_FOR)
                .build(),
        })
    }
}

/// The memory-cache key of a variant's bytes: an id derived from the image
/// and the variant's object name, in the image's user. Never a real image
/// id (those hash source URLs), so images and variants share one cache and
/// one byte budget without colliding.
pub(super) fn alias(key: &ImageKey, name: &str) -> ImageKey {
    ImageKey::new(
        key.user.clone(),
        ImageId::for_source(&format!("variant:{key}/{name}")),
    )
}

/// An `Accept` that negotiates to `negotiated`, for re-resolving a request
/// whose `Accept` was reduced to that choice.
pub(super) fn accept_for(negotiated: Option<Format>) -> Option<&'static str> {
    negotiated.map(Format::content_type)
}

pub(super) fn count(outcome: &str) {
    metrics::get().variants.with_label_values(&[outcome]).inc();
}

/// The image a variant is made from.
pub(super) struct Source {
    pub meta: Arc<ImageMeta>,
    pub dims: Option<(u32, u32)>,
    pub bytes: Option<Bytes>,
}

impl Hosting {
    /// Answers a variant request for `key`. Counts `hit` and `original`;
    /// makes count `made` once each. `see_private` as for
    /// [`Hosting::open_image`].
    pub async fn open_variant(
        self: &Arc<Self>,
        key: &ImageKey,
        spec: VariantSpec,
        accept: Option<&str>,
        see_private: bool,
    ) -> Result<VariantLookup, VariantFail> {
        let vary = spec.format() == OutputFormat::Auto;
        let request = RequestKey {
            key: key.clone(),
            spec,
            negotiated: if vary {
                variants::negotiate(accept)
            } else {
                None
            },
        };
        if let Some(known) = self.variants.memo.get(&request) {
            return Ok(self.answer(known, vary).await);
        }
        let source = self.variant_source(key, see_private).await?;
        let Some(dims) = source.dims else {
            // No dimensions anywhere: not an image this can resize.
            self.variants.memo.insert(request, Resolution::Original);
            return Ok(self.answer(Resolution::Original, vary).await);
        };
        let resolved = spec.resolve(
            accept_for(request.negotiated),
            source.meta.format,
            dims.0,
            dims.1,
        );
        if resolved.same_as_original || !variants::can_decode(source.meta.format) {
            self.variants.memo.insert(request, Resolution::Original);
            return Ok(self.answer(Resolution::Original, vary).await);
        }
        let vkey = resolved.key();
        let record = match self.repo.get_variant(key, &vkey).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                // Waiting on a make counts no hit: the make counts `made`
                // once, however many requests waited for it.
                let made = self.make_shared(source, &request, &vkey)?.await?;
                let resolution = self.remember(request, &made.record, vary);
                if let (Some(bytes), Resolution::Variant(meta, _)) = (&made.bytes, &resolution) {
                    return Ok(VariantLookup::Memory(CachedImage {
                        bytes: bytes.clone(),
                        meta: meta.clone(),
                        loaded: std::time::Instant::now(),
                    }));
                }
                return Ok(self.answer(resolution, vary).await);
            }
            Err(e) => return Err(VariantFail::StoreDown(e.to_string())),
        };
        let resolution = self.remember(request, &record, vary);
        Ok(self.answer(resolution, vary).await)
    }

    fn remember(
        &self,
        request: RequestKey,
        record: &crate::repo::VariantRecord,
        vary: bool,
    ) -> Resolution {
        let meta = Arc::new(record.meta(vary));
        let alias = alias(&record.key, &record.object_name());
        let resolution = Resolution::Variant(meta, alias);
        self.variants.memo.insert(request, resolution.clone());
        resolution
    }

    async fn answer(&self, resolution: Resolution, vary: bool) -> VariantLookup {
        match resolution {
            Resolution::Original => {
                count("original");
                VariantLookup::Original { vary }
            }
            Resolution::Variant(meta, alias) => {
                count("hit");
                self.record_variant_hit(&meta);
                match self.cache.get_variant(&alias).await {
                    // The bytes are shared; the metadata is this request's
                    // (its Vary), so one cached copy serves both kinds.
                    Some(img) => VariantLookup::Memory(CachedImage {
                        bytes: img.bytes,
                        meta,
                        loaded: img.loaded,
                    }),
                    None => VariantLookup::Stored(meta),
                }
            }
        }
    }

    fn record_variant_hit(&self, meta: &ImageMeta) {
        let Some(name) = &meta.variant else {
            return;
        };
        let vkey = name.rsplit_once('-').map_or(&**name, |(k, _)| k);
        let now = crate::clock::now_ms();
        let mut hits = super::lock(&self.variants.hits);
        let at = hits
            .entry((meta.key.clone(), vkey.to_string()))
            .or_insert(0);
        *at = (*at).max(now);
    }

    /// Writes the variants' request times gathered since the last flush;
    /// on failure they wait for the next one.
    pub(super) async fn flush_variant_hits(&self) {
        let taken = std::mem::take(&mut *super::lock(&self.variants.hits));
        if taken.is_empty() {
            return;
        }
        let hits: Vec<crate::repo::VariantHit> = taken
            .into_iter()
            .map(|((key, variant_key), at)| crate::repo::VariantHit {
                key,
                variant_key,
                at,
            })
            .collect();
        if let Err(e) = self.repo.record_variant_hits(&hits).await {
            tracing::warn!(error = %e, "could not write variant request times; keeping them");
            let mut map = super::lock(&self.variants.hits);
            for h in hits {
                let at = map.entry((h.key, h.variant_key)).or_insert(0);
                *at = (*at).max(h.at);
            }
        }
    }

    /// The image behind a variant request: its row (waiting for a pending
    /// download like a plain request does), and its upright dimensions.
    async fn variant_source(
        self: &Arc<Self>,
        key: &ImageKey,
        see_private: bool,
    ) -> Result<Source, VariantFail> {
        if let Some(img) = self.cache.get_image(key).await {
            if img.meta.private && !see_private {
                return Err(VariantFail::Missing);
            }
            return Ok(Source {
                dims: variants::dimensions(&img.bytes),
                meta: img.meta,
                bytes: Some(img.bytes),
            });
        }
        let row = self
            .repo
            .get(key)
            .await
            .map_err(|e| VariantFail::StoreDown(e.to_string()))?;
        let Some(row) = row else {
            return Err(match self.gone_or_missing(key, see_private).await {
                Lookup::Gone(why) => VariantFail::Gone(why),
                Lookup::StoreDown(why) => VariantFail::StoreDown(why),
                _ => VariantFail::Missing,
            });
        };
        if row.private && !see_private {
            return Err(VariantFail::Missing);
        }
        let meta = match (row.state, row.stored_meta()) {
            (ImageState::Stored, Some(meta)) => Arc::new(meta),
            _ => match self.open_image(key, see_private).await {
                Lookup::Memory(img) => img.meta,
                Lookup::Stored(meta) | Lookup::Fetched(meta) => meta,
                Lookup::Redirect(source) => return Err(VariantFail::Redirect(source)),
                Lookup::Unavailable(why) => return Err(VariantFail::Unavailable(why)),
                Lookup::StoreDown(why) => return Err(VariantFail::StoreDown(why)),
                Lookup::Gone(why) => return Err(VariantFail::Gone(why)),
                Lookup::Missing => return Err(VariantFail::Missing),
            },
        };
        // Rows record upright dimensions since issue 14; older rows (or
        // none) mean reading the image's header.
        if let (ImageState::Stored, Some(w), Some(h)) = (row.state, row.width, row.height) {
            return Ok(Source {
                meta,
                dims: Some((w, h)),
                bytes: None,
            });
        }
        let bytes = match self.store.read_all(&meta).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound) => return Err(VariantFail::Missing),
            Err(StoreError::WrongSize { .. }) => {
                self.lost(&meta).await;
                return Err(VariantFail::Missing);
            }
            Err(e) => return Err(VariantFail::StoreDown(e.to_string())),
        };
        Ok(Source {
            dims: variants::dimensions(&bytes),
            meta,
            bytes: Some(bytes),
        })
    }

    /// A stored variant whose object is gone (deleted under a race, or by
    /// hand): forget its row and what memory holds of it, so the next
    /// request makes it again instead of answering 404 for a live image.
    pub async fn forget_lost_variant(&self, meta: &ImageMeta) {
        let Some(name) = &meta.variant else {
            return;
        };
        let vkey = name.rsplit_once('-').map_or(&**name, |(k, _)| k);
        tracing::warn!(image = %meta.key, variant = %name, "a recorded variant's bytes are gone; it will be made again");
        if let Err(e) = self.repo.forget_variant(&meta.key, vkey).await {
            tracing::warn!(image = %meta.key, error = %e, "could not forget a lost variant");
        }
        self.forget_variants_in_memory(&HashSet::from([meta.key.clone()]))
            .await;
    }

    /// Drops every variant of these images from memory (resolutions and
    /// bytes): they were deleted.
    pub(super) async fn forget_variants_in_memory(&self, images: &HashSet<ImageKey>) {
        if images.is_empty() {
            return;
        }
        let stale: Vec<Arc<RequestKey>> = self
            .variants
            .memo
            .iter()
            .filter(|(k, _)| images.contains(&k.key))
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            self.variants.memo.invalidate(&*k);
        }
        self.cache.invalidate_variants_of(images).await;
    }

    /// The images that remembered resolutions point at, for the periodic
    /// check against the database.
    pub(super) fn variant_images_in_memory(&self) -> HashSet<ImageKey> {
        self.variants
            .memo
            .iter()
            .map(|(k, _)| k.key.clone())
            .collect()
    }
}
