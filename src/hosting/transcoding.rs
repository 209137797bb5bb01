//! The CPU work of issue 14, kept off the async workers: making a variant
//! exactly once per replica (single flight on a bounded pool), and
//! transcoding or stripping an image as it is stored.
//!
//! Bounds: at most IMAGE_TRANSCODE_CONCURRENCY transcodes run at once, each
//! on a blocking thread and within `Limits` (pixels from the header, and an
//! estimate of the whole job's peak memory, both checked before decoding).
//! At most IMAGE_TRANSCODE_QUEUE more makes wait; beyond that a request for
//! a variant nobody is making yet gets 503 at once, never a place in an
//! unbounded backlog. Requests for a variant already being made wait for
//! that make and add no work.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};

use super::variants::{accept_for, alias, count, RequestKey, Source, VariantFail};
use super::{lock, store_error, Hosting};
use crate::cache::CachedImage;
use crate::clock::now_ms;
use crate::fetch::Downloaded;
use crate::ids::ImageKey;
use crate::image_format::Format;
use crate::metrics;
use crate::repo::{VariantPut, VariantRecord};
use crate::store::{ImageMeta, StoreError};
use crate::variants::{self, StoreFormat, TranscodeError, VariantSpec};

pub(super) type SharedMake = Shared<BoxFuture<'static, Result<Arc<Made>, VariantFail>>>;

/// A variant that exists now: its row, and its bytes when this make
/// produced them (so the requests that waited are answered from memory).
pub(super) struct Made {
    pub record: VariantRecord,
    pub bytes: Option<Bytes>,
}

fn refusal(e: TranscodeError) -> VariantFail {
    match e {
        TranscodeError::TooManyPixels { .. }
        | TranscodeError::OverMemoryBudget { .. }
        | TranscodeError::OutputTooLarge { .. } => VariantFail::TooLarge(e.to_string()),
        TranscodeError::UnknownFormat
        | TranscodeError::CannotDecode(_)
        | TranscodeError::NoDimensions
        | TranscodeError::Decode(_) => VariantFail::Undecodable(e.to_string()),
        TranscodeError::CannotEncode(_) | TranscodeError::Encode(_) | TranscodeError::Panicked => {
            VariantFail::Internal(e.to_string())
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A make's place in the pool and its queue, shown by a gauge while held.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Admitted {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Admitted {
        metrics::get().transcodes_in_flight.inc();
        Admitted { _permit: permit }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::get().transcodes_in_flight.dec();
    }
}

/// Writes `data` to a new fsynced file in `dir`, deleted when dropped.
fn stage(dir: &Path, data: &[u8]) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix("variant-")
        .tempfile_in(dir)?;
    f.write_all(data)?;
    f.as_file().sync_all()?;
    Ok(f.into_temp_path())
}

impl Hosting {
    /// Joins the make of this variant, or starts it when there is room.
    pub(super) fn make_shared(
        self: &Arc<Self>,
        source: Source,
        request: &RequestKey,
        vkey: &str,
    ) -> Result<SharedMake, VariantFail> {
        let id = (request.key.clone(), vkey.to_string());
        // Refused lately: no slot is taken to say so again.
        if let Some(fail) = self.variants.refused.get(&id) {
            return Err(fail);
        }
        // Held while the task is spawned and registered: the task removes
        // its entry under the same lock, so it can never run first.
        let mut inflight = lock(&self.variants.inflight);
        if let Some(f) = inflight.get(&id) {
            return Ok(f.clone());
        }
        let admitted = Admitted::new(
            self.variants
                .admission
                .clone()
                .try_acquire_owned()
                .map_err(|_| VariantFail::Busy)?,
        );
        let this = self.clone();
        let (spec, negotiated) = (request.spec, request.negotiated);
        let task_id = id.clone();
        // Its own task: a client that goes away never cancels a make that
        // others wait for.
        let handle = tokio::spawn(async move {
            let result = this
                .make(source, spec, negotiated, &task_id.1)
                .await
                .map(Arc::new);
            lock(&this.variants.inflight).remove(&task_id);
            drop(admitted);
            result
        });
        let shared = async move {
            handle
                .await
                .unwrap_or_else(|e| Err(VariantFail::Internal(format!("variant task: {e}"))))
        }
        .boxed()
        .shared();
        inflight.insert(id, shared.clone());
        Ok(shared)
    }

    async fn make(
        self: &Arc<Self>,
        source: Source,
        spec: VariantSpec,
        negotiated: Option<Format>,
        vkey: &str,
    ) -> Result<Made, VariantFail> {
        let generation = self.deletes.load(Ordering::SeqCst);
        let key = source.meta.key.clone();
        if let Some(done) = self.existing_variant(&source.meta, vkey).await? {
            return Ok(done);
        }
        // The slot is taken before the image is read, so the images held
        // in memory for makes are bounded by the pool too, not the queue.
        let cpu = self
            .variants
            .compute
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| VariantFail::Internal(e.to_string()))?;
        let bytes = match source.bytes {
            Some(b) => b,
            None => match self.store.read_all(&source.meta).await {
                Ok(b) => b,
                Err(StoreError::NotFound) => return Err(VariantFail::Missing),
                Err(StoreError::WrongSize { .. }) => {
                    self.lost(&source.meta).await;
                    return Err(VariantFail::Missing);
                }
                Err(e) => return Err(VariantFail::StoreDown(e.to_string())),
            },
        };
        // The bytes' own upright dimensions decide, in case the row's
        // (recorded before EXIF orientation counted) differ.
        let (w, h) = variants::dimensions(&bytes)
            .ok_or_else(|| VariantFail::Undecodable("no dimensions in the header".into()))?;
        let resolved = spec.resolve(accept_for(negotiated), source.meta.format, w, h);
        let vkey = match resolved.key() {
            same if same == vkey => same,
            other => match self.existing_variant(&source.meta, &other).await? {
                Some(done) => return Ok(done),
                None => other,
            },
        };
        let limits = self.variants.limits;
        let started = Instant::now();
        let out = self
            .variants
            .threads
            .run(move || variants::make_variant(&bytes, &resolved, &limits))
            .await
            .map_err(VariantFail::Internal)?;
        metrics::get()
            .transcode_duration
            .observe(started.elapsed().as_secs_f64());
        drop(cpu);
        let t = out.map_err(|e| {
            let fail = refusal(e);
            if matches!(fail, VariantFail::TooLarge(_) | VariantFail::Undecodable(_)) {
                self.variants
                    .refused
                    .insert((key.clone(), vkey.clone()), fail.clone());
            }
            tracing::warn!(image = %key, variant = %vkey, error = ?fail, "variant not made");
            fail
        })?;
        let record = VariantRecord {
            key: key.clone(),
            variant_key: vkey,
            format: t.format,
            size: t.bytes.len() as u64,
            sha256: sha256_hex(&t.bytes),
            width: t.width,
            height: t.height,
            created_at: now_ms(),
        };
        let bytes = Bytes::from(t.bytes);
        self.store_variant(&record, &bytes).await?;
        // Heights, fits, formats and qualities multiply: without a bound per
        // image, one image could be made into millions of stored files. At
        // the bound the least recently requested variant makes room.
        let made = match self
            .repo
            .record_variant(&record, self.variants.per_image)
            .await
        {
            Ok(VariantPut::Recorded { evicted }) => {
                self.evicted_variants(&key, &evicted).await;
                Made {
                    bytes: Some(bytes),
                    record,
                }
            }
            // Made elsewhere first: that row wins, and our object goes
            // unless it is the very same one (same bytes, same name).
            Ok(VariantPut::Exists(first)) => {
                let same = first.object_name() == record.object_name();
                if !same {
                    self.discard_bytes(&record.relative_path()).await;
                }
                return Ok(Made {
                    bytes: same.then_some(bytes),
                    record: first,
                });
            }
            Ok(VariantPut::ImageGone) => {
                self.discard_bytes(&record.relative_path()).await;
                return Err(VariantFail::Missing);
            }
            Err(e) => {
                self.discard_bytes(&record.relative_path()).await;
                return Err(VariantFail::StoreDown(e.to_string()));
            }
        };
        count("made");
        tracing::info!(image = %key, variant = %made.record.variant_key, bytes = made.record.size, "variant made");
        self.cache_variant(&made, generation).await;
        Ok(made)
    }

    /// Variants that made room for a new one: gone from memory (every
    /// resolution of the image is forgotten; hits make them again), then
    /// their bytes, which the same transaction queued.
    async fn evicted_variants(&self, key: &ImageKey, evicted: &[VariantRecord]) {
        if evicted.is_empty() {
            return;
        }
        self.forget_variants_in_memory(&std::collections::HashSet::from([key.clone()]))
            .await;
        for v in evicted {
            count("evicted");
            tracing::info!(image = %key, variant = %v.variant_key, "variant evicted to make room (IMAGE_VARIANTS_PER_IMAGE)");
            self.remove_bytes(&v.relative_path()).await;
        }
    }

    /// A variant that needs no make: recorded already, or refused lately.
    async fn existing_variant(
        &self,
        image: &ImageMeta,
        vkey: &str,
    ) -> Result<Option<Made>, VariantFail> {
        if let Some(fail) = self
            .variants
            .refused
            .get(&(image.key.clone(), vkey.to_string()))
        {
            return Err(fail);
        }
        match self.repo.get_variant(&image.key, vkey).await {
            Ok(Some(record)) => Ok(Some(Made {
                record,
                bytes: None,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(VariantFail::StoreDown(e.to_string())),
        }
    }

    async fn store_variant(
        &self,
        record: &VariantRecord,
        bytes: &Bytes,
    ) -> Result<(), VariantFail> {
        let dir = super::staging_dir(&self.cfg);
        let data = bytes.clone();
        // As for an image (download.rs): no queued delete of this path may
        // outlive the put.
        self.repo
            .forget_queued_delete(&record.relative_path())
            .await
            .map_err(|e| VariantFail::StoreDown(e.to_string()))?;
        let staged = tokio::task::spawn_blocking(move || stage(&dir, &data))
            .await
            .map_err(|e| VariantFail::Internal(e.to_string()))?
            .map_err(|e| VariantFail::StoreDown(store_error(StoreError::from_io(e)).to_string()))?;
        self.store
            .put(&staged, &record.meta(false))
            .await
            .map_err(|e| VariantFail::StoreDown(store_error(e).to_string()))
    }

    async fn cache_variant(&self, made: &Made, generation: u64) {
        let Some(bytes) = &made.bytes else {
            return;
        };
        let alias = alias(&made.record.key, &made.record.object_name());
        let img = CachedImage {
            bytes: bytes.clone(),
            meta: Arc::new(made.record.meta(false)),
            loaded: Instant::now(),
        };
        self.cache.insert(alias.clone(), img).await;
        // Deleted while it was made: memory must not keep it.
        if self.deletes.load(Ordering::SeqCst) != generation {
            self.cache.invalidate(&alias).await;
        }
    }

    /// IMAGE_STORE_FORMAT, else IMAGE_STRIP_METADATA, applied to a
    /// downloaded image before it is stored; records upright dimensions.
    /// Any failure keeps the downloaded bytes as they are: a transcode
    /// must never cost an image.
    pub(super) async fn prepare_for_store(&self, d: &mut Downloaded) {
        let cfg = &self.cfg.variants;
        let convert = cfg.store_format != StoreFormat::Original;
        if !convert && !cfg.strip_metadata {
            return;
        }
        // Converting is a transcode: it takes a slot of the pool. Stripping
        // is byte surgery and does not wait behind variant makes.
        let _cpu = if convert {
            self.variants.compute.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let path = d.staged.to_path_buf();
        let (format, target, quality, strip) = (
            d.format,
            cfg.store_format,
            cfg.store_quality,
            cfg.strip_metadata,
        );
        let limits = self.variants.limits;
        let started = Instant::now();
        let work = move || prepare_file(&path, format, target, quality, strip, &limits);
        let job = if convert {
            self.variants.threads.run(work).await
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| e.to_string())
        };
        if convert {
            metrics::get()
                .transcode_duration
                .observe(started.elapsed().as_secs_f64());
        }
        match job {
            Ok(Ok(p)) => {
                if let Some((size, sha256, format)) = p.rewritten {
                    d.size = size;
                    d.sha256 = sha256;
                    d.format = format;
                }
                if p.dims.is_some() {
                    d.dims = p.dims;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "image stored as downloaded: could not rewrite it")
            }
            Err(e) => {
                tracing::error!(error = %e, "image stored as downloaded: the rewrite panicked")
            }
        }
    }
}

struct Prepared {
    /// (size, sha256, format) when the file was rewritten.
    rewritten: Option<(u64, String, Format)>,
    dims: Option<(u32, u32)>,
}

/// The blocking part of [`Hosting::prepare_for_store`]. The new bytes are
/// written beside the staged file and renamed over it, so a failure (a full
/// disk) leaves the downloaded file whole.
fn prepare_file(
    path: &Path,
    format: Format,
    target: StoreFormat,
    quality: u8,
    strip: bool,
    limits: &variants::Limits,
) -> std::io::Result<Prepared> {
    let input = std::fs::read(path)?;
    let mut out: Option<(Vec<u8>, Format)> = None;
    if target != StoreFormat::Original {
        match variants::convert_for_store(&input, target, quality, limits) {
            Ok(t) if t.format != format => out = Some((t.bytes, t.format)),
            Ok(_) => {}
            Err(e) => tracing::info!(error = %e, "kept in its own format"),
        }
    }
    if out.is_none() && strip {
        if let std::borrow::Cow::Owned(stripped) = variants::strip_metadata(&input, format) {
            out = Some((stripped, format));
        }
    }
    let Some((bytes, format)) = out else {
        return Ok(Prepared {
            rewritten: None,
            dims: variants::dimensions(&input),
        });
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let staged = stage(dir, &bytes)?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(Prepared {
        dims: variants::dimensions(&bytes),
        rewritten: Some((bytes.len() as u64, sha256_hex(&bytes), format)),
    })
}
