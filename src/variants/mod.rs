//! Image variants: resizing, format conversion and metadata stripping, as a
//! self-contained core that the serving path and ingest call into.
//!
//! - [`params`]: pure query parsing ([`VariantSpec::parse`]) and resolution
//!   against `Accept` and the original ([`VariantSpec::resolve`] gives a
//!   [`Resolved`] with a canonical [`Resolved::key`]).
//! - [`transcode`]: the blocking CPU work: [`make_variant`] and
//!   [`convert_for_store`], capped by [`Limits`]; [`dimensions`] reads the
//!   header only.
//! - [`metadata`]: pure, lossless byte surgery: [`strip_metadata`] drops
//!   EXIF/XMP/text and keeps ICC profiles.
//!
//! # How the serving path uses it
//!
//! ```text
//! query ── VariantSpec::parse(query, widths) ──► Err(e): 400 {"error": e, "code": e.code(), "parameter": e.parameter()}
//!                                            ──► Ok(None): the original, as today
//!                                            ──► Ok(Some(spec))
//! spec.resolve(Accept, original format, width, height)   (dimensions: stored row, or transcode::dimensions)
//!   ├─ same_as_original: serve the original (add Vary: Accept if vary_accept)
//!   ├─ !can_decode(original format) (AVIF): serve the original too
//!   └─ otherwise look up (image id, key()); on a miss, single-flight
//!      make_variant(bytes, &resolved, &limits) on the bounded pool, store it,
//!      answer with Content-Type resolved.format, Vary: Accept if vary_accept.
//! ```
//!
//! # Running on a bounded pool
//!
//! [`make_variant`] and [`convert_for_store`] block for milliseconds to
//! seconds (AVIF), so never call them on an async worker. Wrap them in
//! `tokio::task::spawn_blocking` behind a `tokio::sync::Semaphore` of N
//! permits (N = cores is a good start). They start no threads and keep no
//! global state, so N permits mean at most N cores busy, and the memory
//! is at most N x [`Limits::max_memory_bytes`] on top of the inputs.
//! They are `Send`/`Sync`-safe to call from any thread concurrently.
//! Panics inside a codec are caught and returned as
//! [`TranscodeError::Panicked`].
//!
//! # Memory budget
//!
//! Before any pixel is decoded, the header dimensions are checked against
//! [`Limits::max_pixels`] (`IMAGE_MAX_PIXELS`) and the whole job's peak heap
//! is estimated by [`transcode::estimate_memory`] (decoded source, one
//! converted copy, the resizer's intermediate, the output and the encoder's
//! working memory) and compared with [`Limits::max_memory_bytes`]. The same
//! byte limit is given to the decoder as `max_alloc`. A 50000x50000 PNG
//! bomb is refused from its header in microseconds.
//!
//! # Decisions worth knowing
//!
//! - Animated GIF/WebP (and APNG): a resized variant is the first frame.
//!   A GIF's variant is PNG unless another format is asked. Ingest
//!   transcoding (`IMAGE_STORE_FORMAT`) leaves animated files as they are.
//! - Variants carry no EXIF/XMP: orientation is applied to the pixels, then
//!   everything but the ICC profile is dropped. AVIF output has its pixels
//!   converted to sRGB instead (ravif cannot embed ICC).
//! - AVIF originals are served and stripped-as-is but not decoded (no
//!   AV1 decoder in this build: dav1d >= 1.3 is not in Debian 12). With
//!   `IMAGE_STORE_FORMAT=avif`, variants of stored images therefore fall
//!   back to the original; prefer `webp` when variants matter.
//! - 16-bit sources are reduced to 8 bits per channel.

pub mod metadata;
pub mod params;
pub mod transcode;

pub use metadata::strip_metadata;
pub use params::{negotiate, Fit, OutputFormat, Resolved, VariantError, VariantSpec};
pub use transcode::{
    can_decode, convert_for_store, dimensions, make_variant, Limits, StoreFormat, TranscodeError,
    Transcoded,
};
