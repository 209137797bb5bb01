//! Decoding, resizing and encoding: the blocking CPU work of variants and of
//! ingest transcoding. Call it from a bounded pool of blocking threads (see
//! the module docs of [`super`]); every function here is synchronous,
//! thread-safe, keeps no global state and starts no threads of its own.
//!
//! Libraries (choice and numbers in `benches/variants/README.md`):
//! - decoding: the `image` crate's pure-Rust decoders (`png`, `zune-jpeg`,
//!   `image-webp`, `gif`), so untrusted bytes never reach C code;
//! - resizing: `fast_image_resize` (SIMD Lanczos3, crop in the same pass);
//! - WebP: libwebp through the `webp` crate (the pure-Rust encoder is
//!   lossless only); JPEG and PNG: the `image` crate's encoders;
//! - AVIF: `ravif` (rav1e); colour profiles are converted to sRGB with
//!   `moxcms` first, since ravif writes no ICC;
//! - no AVIF decoding: that needs dav1d >= 1.3, which Debian 12 does not
//!   ship ([`can_decode`]).
//!
//! Order of checks for every input: sniff the format, read the dimensions
//! from the header, refuse more than [`Limits::max_pixels`], estimate the
//! peak memory of the whole job ([`estimate_memory`]) and refuse more than
//! [`Limits::max_memory_bytes`]; only then decode, with the same limits
//! handed to the decoder as a second fence.

mod encode;

use super::metadata;
use super::params::{Fit, Resolved};
use crate::image_format::{sniff, Format};
use encode::encode;
pub use encode::AVIF_SPEED;
use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageEncoder};
use std::io::Cursor;

/// Caps for one decode/encode job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest width x height accepted, from the header (`IMAGE_MAX_PIXELS`).
    pub max_pixels: u64,
    /// Largest estimated peak heap of one job, in bytes.
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    /// 100 MP (the `IMAGE_MAX_PIXELS` default) and 512 MiB per job: enough
    /// for a ~40 MP source (8000x5000), far above generated images (1-4 MP).
    fn default() -> Self {
        Limits {
            max_pixels: 100_000_000,
            max_memory_bytes: 512 << 20,
        }
    }
}

/// `IMAGE_STORE_FORMAT`: what originals are stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreFormat {
    #[default]
    Original,
    Webp,
    Avif,
}

impl StoreFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFormat::Original => "original",
            StoreFormat::Webp => "webp",
            StoreFormat::Avif => "avif",
        }
    }
}

impl std::str::FromStr for StoreFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "original" => Ok(StoreFormat::Original),
            "webp" => Ok(StoreFormat::Webp),
            "avif" => Ok(StoreFormat::Avif),
            _ => Err(format!("{s:?} is not one of original, webp, avif")),
        }
    }
}

/// An encoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// Not PNG, JPEG, WebP, GIF or AVIF.
    #[error("not a supported image format")]
    UnknownFormat,
    /// A known format this build cannot decode (AVIF): serve the original.
    #[error("{} images cannot be decoded here", .0.ext())]
    CannotDecode(Format),
    /// Only the untouched original can be GIF.
    #[error("{} output is not supported", .0.ext())]
    CannotEncode(Format),
    #[error("the image header gives no dimensions")]
    NoDimensions,
    #[error("image is {width}x{height}, over the limit of {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("this needs about {needed} bytes of memory, over the budget of {budget}")]
    OverMemoryBudget { needed: u64, budget: u64 },
    #[error("output {width}x{height} is too large for {}", .format.ext())]
    OutputTooLarge {
        width: u32,
        height: u32,
        format: Format,
    },
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    /// A library panicked; caught here so one bad file cannot take a worker.
    #[error("internal error while transcoding")]
    Panicked,
}

/// Whether pixels of this format can be decoded here (all but AVIF).
pub fn can_decode(format: Format) -> bool {
    format != Format::Avif
}

/// Display width and height from the header, without decoding: EXIF
/// orientations 5..=8 (90° turns) swap them, because variants are made
/// upright. Feed these to [`super::VariantSpec::resolve`].
pub fn dimensions(input: &[u8]) -> Option<(u32, u32)> {
    let size = imagesize::blob_size(input).ok()?;
    let (w, h) = (
        u32::try_from(size.width).ok()?,
        u32::try_from(size.height).ok()?,
    );
    let turned = sniff(input)
        .and_then(|f| metadata::orientation(input, f))
        .is_some_and(|o| o >= 5);
    Some(if turned { (h, w) } else { (w, h) })
}

/// Bytes per output pixel that each encoder holds on top of the pixels
/// (measured upper bounds, rounded up; see `benches/variants/README.md`).
fn encoder_overhead_per_pixel(format: Format) -> u64 {
    match format {
        Format::Avif => 64,
        Format::Webp => 8,
        Format::Jpeg | Format::Png | Format::Gif => 4,
    }
}

/// Estimated peak heap of a job from header dimensions alone: the decoded
/// source (8 bytes a pixel covers 16-bit RGBA), one converted or rotated
/// copy (4 a pixel), the resizer's intermediate (output width x source
/// height x 4), the output pixels and the encoder's working memory.
pub fn estimate_memory(src: (u32, u32), out: (u32, u32), format: Format) -> u64 {
    let src_px = src.0 as u64 * src.1 as u64;
    let out_px = out.0 as u64 * out.1 as u64;
    let intermediate = out.0 as u64 * src.1 as u64 * 4;
    src_px
        .saturating_mul(12)
        .saturating_add(intermediate)
        .saturating_add(out_px.saturating_mul(4 + encoder_overhead_per_pixel(format)))
}

/// Runs `f`, turning a panic in a decoder or encoder into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, TranscodeError>) -> Result<T, TranscodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or(Err(TranscodeError::Panicked))
}

/// Makes the variant `r` of `input` (already resolved against this input's
/// [`dimensions`]). When `r.same_as_original`, the input is returned as is.
pub fn make_variant(
    input: &[u8],
    r: &Resolved,
    limits: &Limits,
) -> Result<Transcoded, TranscodeError> {
    let format = sniff(input).ok_or(TranscodeError::UnknownFormat)?;
    let (w, h) = check_header(input, format, limits)?;
    if r.same_as_original && r.format == format {
        return Ok(Transcoded {
            bytes: input.to_vec(),
            format,
            width: w,
            height: h,
        });
    }
    if r.format == Format::Gif {
        return Err(TranscodeError::CannotEncode(Format::Gif));
    }
    check_output(r.width, r.height, r.format, limits)?;
    let needed = estimate_memory((w, h), (r.width, r.height), r.format);
    if needed > limits.max_memory_bytes {
        return Err(TranscodeError::OverMemoryBudget {
            needed,
            budget: limits.max_memory_bytes,
        });
    }
    guarded(|| {
        let decoded = decode(input, format, limits)?;
        let pixels = resize(decoded.pixels, r.width, r.height, r.fit, r.format)?;
        encode(&pixels, r.format, r.quality, decoded.icc.as_deref())
    })
}

/// Transcodes an original for storage (`IMAGE_STORE_FORMAT`) at `quality`.
///
/// The input comes back unchanged (same bytes, its own format) when the
/// target is `Original` or already the input's format, when the input is
/// animated (a still image would lose the animation), when it is AVIF (not
/// decodable here), or when the transcoded file would not be smaller.
/// Metadata is not carried over, except the ICC profile (WebP) or its
/// effect (AVIF, converted to sRGB); orientation is applied to the pixels.
pub fn convert_for_store(
    input: &[u8],
    target: StoreFormat,
    quality: u8,
    limits: &Limits,
) -> Result<Transcoded, TranscodeError> {
    let format = sniff(input).ok_or(TranscodeError::UnknownFormat)?;
    let (w, h) = check_header(input, format, limits)?;
    let out_format = match target {
        StoreFormat::Original => None,
        StoreFormat::Webp => Some(Format::Webp),
        StoreFormat::Avif => Some(Format::Avif),
    };
    let keep = || Transcoded {
        bytes: input.to_vec(),
        format,
        width: w,
        height: h,
    };
    let Some(out_format) = out_format else {
        return Ok(keep());
    };
    if out_format == format || !can_decode(format) || metadata::is_animated(input, format) {
        return Ok(keep());
    }
    check_output(w, h, out_format, limits)?;
    let needed = estimate_memory((w, h), (w, h), out_format);
    if needed > limits.max_memory_bytes {
        return Err(TranscodeError::OverMemoryBudget {
            needed,
            budget: limits.max_memory_bytes,
        });
    }
    let out = guarded(|| {
        let decoded = decode(input, format, limits)?;
        let pixels = Pixels::from_image(decoded.pixels);
        encode(
            &pixels,
            out_format,
            quality.clamp(1, 100),
            decoded.icc.as_deref(),
        )
    })?;
    if out.bytes.len() >= input.len() {
        return Ok(keep());
    }
    Ok(out)
}

/// Format-independent checks on the header: dimensions present and within
/// the pixel cap. Returns the display dimensions.
fn check_header(
    input: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<(u32, u32), TranscodeError> {
    if !can_decode(format) {
        // Still report AVIF dimensions when asked to pass it through.
        if let Some(d) = dimensions(input) {
            return Ok(d);
        }
        return Err(TranscodeError::CannotDecode(format));
    }
    let (w, h) = dimensions(input).ok_or(TranscodeError::NoDimensions)?;
    if w == 0 || h == 0 {
        return Err(TranscodeError::NoDimensions);
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(TranscodeError::TooManyPixels {
            width: w,
            height: h,
            max: limits.max_pixels,
        });
    }
    Ok((w, h))
}

fn check_output(w: u32, h: u32, format: Format, limits: &Limits) -> Result<(), TranscodeError> {
    let max_side = match format {
        Format::Webp => 16_383,
        Format::Jpeg => 65_535,
        Format::Avif => 16_384,
        Format::Png | Format::Gif => u32::MAX,
    };
    if w == 0 || h == 0 || w > max_side || h > max_side || w as u64 * h as u64 > limits.max_pixels {
        return Err(TranscodeError::OutputTooLarge {
            width: w,
            height: h,
            format,
        });
    }
    Ok(())
}

struct Decoded {
    /// Upright (orientation applied), first frame.
    pixels: DynamicImage,
    icc: Option<Vec<u8>>,
}

fn decode_err(e: image::ImageError) -> TranscodeError {
    match e {
        image::ImageError::Limits(l) => TranscodeError::Decode(format!("limit: {l}")),
        e => TranscodeError::Decode(e.to_string()),
    }
}

fn decode(input: &[u8], format: Format, limits: &Limits) -> Result<Decoded, TranscodeError> {
    let mut il = image::Limits::default();
    il.max_alloc = Some(limits.max_memory_bytes);
    match format {
        Format::Png => {
            let d = image::codecs::png::PngDecoder::with_limits(Cursor::new(input), il)
                .map_err(decode_err)?;
            finish_decode(d)
        }
        Format::Jpeg => {
            let mut d =
                image::codecs::jpeg::JpegDecoder::new(Cursor::new(input)).map_err(decode_err)?;
            d.set_limits(il).map_err(decode_err)?;
            finish_decode(d)
        }
        Format::Webp => {
            let mut d =
                image::codecs::webp::WebPDecoder::new(Cursor::new(input)).map_err(decode_err)?;
            d.set_limits(il).map_err(decode_err)?;
            finish_decode(d)
        }
        Format::Gif => {
            // Reads the first frame only, composed on the logical screen.
            let mut d =
                image::codecs::gif::GifDecoder::new(Cursor::new(input)).map_err(decode_err)?;
            d.set_limits(il).map_err(decode_err)?;
            finish_decode(d)
        }
        Format::Avif => Err(TranscodeError::CannotDecode(Format::Avif)),
    }
}

fn finish_decode(mut d: impl ImageDecoder) -> Result<Decoded, TranscodeError> {
    // Pixels leave as RGB(A): a grey or CMYK profile would no longer match
    // them (browsers then ignore or misapply it), so only RGB ones are kept.
    let icc = d
        .icc_profile()
        .ok()
        .flatten()
        .filter(|p| p.get(16..20) == Some(b"RGB "));
    let orientation = d
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut pixels = DynamicImage::from_decoder(d).map_err(decode_err)?;
    pixels.apply_orientation(orientation);
    Ok(Decoded { pixels, icc })
}

/// 8-bit pixels, RGB or RGBA (alpha dropped when fully opaque).
struct Pixels {
    data: Vec<u8>,
    width: u32,
    height: u32,
    alpha: bool,
}

impl Pixels {
    fn from_image(img: DynamicImage) -> Pixels {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            let rgba = img.into_rgba8();
            if rgba.pixels().all(|p| p.0[3] == 255) {
                let data = rgba
                    .pixels()
                    .flat_map(|p| [p.0[0], p.0[1], p.0[2]])
                    .collect();
                return Pixels {
                    data,
                    width,
                    height,
                    alpha: false,
                };
            }
            return Pixels {
                data: rgba.into_raw(),
                width,
                height,
                alpha: true,
            };
        }
        Pixels {
            data: img.into_rgb8().into_raw(),
            width,
            height,
            alpha: false,
        }
    }

    /// Composites onto white and drops alpha (for JPEG).
    fn flatten(self) -> Pixels {
        if !self.alpha {
            return self;
        }
        let data = self
            .data
            .chunks_exact(4)
            .flat_map(|p| {
                let a = p[3] as u32;
                let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                [mix(p[0]), mix(p[1]), mix(p[2])]
            })
            .collect();
        Pixels {
            data,
            alpha: false,
            ..self
        }
    }
}

fn resize_err(e: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Encode(format!("resize: {e}"))
}

/// Scales (and crops or pads) to exactly `out_w`x`out_h`, never upscaling.
fn resize(
    img: DynamicImage,
    out_w: u32,
    out_h: u32,
    fit: Fit,
    format: Format,
) -> Result<Pixels, TranscodeError> {
    let src = Pixels::from_image(img);
    let (sw, sh) = (src.width, src.height);
    let (fsw, fsh, fw, fh) = (sw as f64, sh as f64, out_w as f64, out_h as f64);
    let pixels = match fit {
        Fit::Inside => {
            // The resolver computed out_w x out_h from these very dimensions;
            // if they were from another file, still never upscale or stretch.
            let (w, h) = if out_w <= sw && out_h <= sh {
                (out_w, out_h)
            } else {
                let s = (fw / fsw).min(fh / fsh).min(1.0);
                (
                    ((fsw * s).round() as u32).max(1),
                    ((fsh * s).round() as u32).max(1),
                )
            };
            scale(&src, w, h, None)?
        }
        Fit::Cover => {
            // Source region with the output's aspect ratio, centred.
            let s = (fw / fsw).max(fh / fsh);
            let (cw, ch) = ((fw / s).min(fsw), (fh / s).min(fsh));
            let crop = ((fsw - cw) / 2.0, (fsh - ch) / 2.0, cw, ch);
            let (w, h) = if s <= 1.0 {
                (out_w, out_h)
            } else {
                ((cw.round() as u32).max(1), (ch.round() as u32).max(1))
            };
            scale(&src, w, h, Some(crop))?
        }
        Fit::Contain => {
            let s = (fw / fsw).min(fh / fsh).min(1.0);
            let (iw, ih) = (
                ((fsw * s).round() as u32).clamp(1, out_w),
                ((fsh * s).round() as u32).clamp(1, out_h),
            );
            let inner = scale(&src, iw, ih, None)?;
            pad(inner, out_w, out_h, format)
        }
    };
    Ok(pixels)
}

fn scale(
    src: &Pixels,
    w: u32,
    h: u32,
    crop: Option<(f64, f64, f64, f64)>,
) -> Result<Pixels, TranscodeError> {
    let pt = if src.alpha {
        fr::PixelType::U8x4
    } else {
        fr::PixelType::U8x3
    };
    if crop.is_none() && (w, h) == (src.width, src.height) {
        return Ok(Pixels {
            data: src.data.clone(),
            ..*src
        });
    }
    let from =
        fr::images::ImageRef::new(src.width, src.height, &src.data, pt).map_err(resize_err)?;
    let mut to = fr::images::Image::new(w, h, pt);
    let mut opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    if let Some((l, t, cw, ch)) = crop {
        opts = opts.crop(l, t, cw, ch);
    }
    fr::Resizer::new()
        .resize(&from, &mut to, &opts)
        .map_err(resize_err)?;
    Ok(Pixels {
        data: to.into_vec(),
        width: w,
        height: h,
        alpha: src.alpha,
    })
}

/// Centres `inner` on an `out_w`x`out_h` canvas: transparent where the
/// output format has alpha, white for JPEG.
fn pad(inner: Pixels, out_w: u32, out_h: u32, format: Format) -> Pixels {
    if (inner.width, inner.height) == (out_w, out_h) {
        return inner;
    }
    let alpha = format != Format::Jpeg;
    let inner = if alpha {
        inner.with_alpha()
    } else {
        inner.flatten()
    };
    let ch = if alpha { 4 } else { 3 };
    let fill: &[u8] = if alpha {
        &[0, 0, 0, 0]
    } else {
        &[255, 255, 255]
    };
    let mut data: Vec<u8> = fill
        .iter()
        .copied()
        .cycle()
        .take(out_w as usize * out_h as usize * ch)
        .collect();
    let left = ((out_w - inner.width) / 2) as usize;
    let top = ((out_h - inner.height) / 2) as usize;
    let row = inner.width as usize * ch;
    for (y, src_row) in inner.data.chunks_exact(row).enumerate() {
        let at = ((top + y) * out_w as usize + left) * ch;
        data[at..at + row].copy_from_slice(src_row);
    }
    Pixels {
        data,
        width: out_w,
        height: out_h,
        alpha,
    }
}

impl Pixels {
    fn with_alpha(self) -> Pixels {
        if self.alpha {
            return self;
        }
        let data = self
            .data
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        Pixels {
            data,
            alpha: true,
            ..self
        }
    }
}

#[cfg(test)]
mod tests;
