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

use super::metadata;
use super::params::{Fit, Resolved};
use crate::image_format::{sniff, Format};
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

/// rav1e speed (1 slowest..10 fastest), for variants and ingest alike.
/// Measured on a 1024 px picture (benches/variants/README.md): speed 10
/// encodes in about a tenth of the time of speed 8 for files ~15% larger;
/// a variant is made while a client waits and ingest can be on the
/// response path, so time wins.
pub const AVIF_SPEED: u8 = 10;

fn encode(
    px: &Pixels,
    format: Format,
    quality: u8,
    icc: Option<&[u8]>,
) -> Result<Transcoded, TranscodeError> {
    let (w, h) = (px.width, px.height);
    let enc_err = |e: &dyn std::fmt::Display| TranscodeError::Encode(e.to_string());
    let bytes = match format {
        Format::Webp => {
            let layout = if px.alpha {
                webp::PixelLayout::Rgba
            } else {
                webp::PixelLayout::Rgb
            };
            let mem = webp::Encoder::new(&px.data, layout, w, h)
                .encode_simple(false, quality.clamp(1, 100) as f32)
                .map_err(|e| TranscodeError::Encode(format!("webp: {e:?}")))?;
            let plain = mem.to_vec();
            match icc {
                Some(icc) => metadata::webp_with_icc(&plain, icc, w, h)
                    .ok_or_else(|| TranscodeError::Encode("webp: cannot add ICC".into()))?,
                None => plain,
            }
        }
        Format::Jpeg => {
            let owned;
            let px = if px.alpha {
                owned = Pixels {
                    data: px.data.clone(),
                    ..*px
                }
                .flatten();
                &owned
            } else {
                px
            };
            let mut out = Vec::new();
            let mut enc =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            if let Some(icc) = icc {
                let _ = enc.set_icc_profile(icc.to_vec());
            }
            enc.write_image(&px.data, w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| enc_err(&e))?;
            out
        }
        Format::Png => {
            let mut out = Vec::new();
            let mut enc = image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Default,
                image::codecs::png::FilterType::Adaptive,
            );
            if let Some(icc) = icc {
                let _ = enc.set_icc_profile(icc.to_vec());
            }
            let ct = if px.alpha {
                image::ExtendedColorType::Rgba8
            } else {
                image::ExtendedColorType::Rgb8
            };
            enc.write_image(&px.data, w, h, ct)
                .map_err(|e| enc_err(&e))?;
            out
        }
        Format::Avif => encode_avif(px, quality, icc)?,
        Format::Gif => return Err(TranscodeError::CannotEncode(Format::Gif)),
    };
    Ok(Transcoded {
        bytes,
        format,
        width: w,
        height: h,
    })
}

fn encode_avif(px: &Pixels, quality: u8, icc: Option<&[u8]>) -> Result<Vec<u8>, TranscodeError> {
    use rgb::FromSlice;
    let srgb = icc.and_then(|icc| to_srgb(px, icc));
    let data = srgb.as_deref().unwrap_or(&px.data);
    let enc = ravif::Encoder::new()
        .with_quality(quality.clamp(1, 100) as f32)
        .with_alpha_quality(quality.clamp(1, 100) as f32)
        .with_speed(AVIF_SPEED)
        .with_num_threads(Some(1));
    let (w, h) = (px.width as usize, px.height as usize);
    let res = if px.alpha {
        enc.encode_rgba(ravif::Img::new(data.as_rgba(), w, h))
    } else {
        enc.encode_rgb(ravif::Img::new(data.as_rgb(), w, h))
    };
    res.map(|e| e.avif_file)
        .map_err(|e| TranscodeError::Encode(format!("avif: {e}")))
}

/// Converts pixels from an embedded profile to sRGB (ravif cannot embed
/// ICC). `None` when the profile is unreadable or already sRGB-like, in
/// which case the pixels are used as they are.
fn to_srgb(px: &Pixels, icc: &[u8]) -> Option<Vec<u8>> {
    let src = moxcms::ColorProfile::new_from_slice(icc).ok()?;
    let dst = moxcms::ColorProfile::new_srgb();
    let layout = if px.alpha {
        moxcms::Layout::Rgba
    } else {
        moxcms::Layout::Rgb
    };
    let t = src
        .create_transform_8bit(layout, &dst, layout, moxcms::TransformOptions::default())
        .ok()?;
    let mut out = vec![0u8; px.data.len()];
    t.transform(&px.data, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::metadata::tests::{
        exif_with, fake_icc, fixture, icc_app2, jpeg_with, png_with,
    };
    use super::super::params::VariantSpec;
    use super::*;
    use std::time::Instant;

    const WIDTHS: &[u32] = &[64, 128, 256, 512, 1024, 2048];

    /// A photo-like test picture: gradients, some structure and sensor-like
    /// noise (so that, as with photographs, PNG does not beat lossy codecs).
    fn picture(w: u32, h: u32, alpha: bool) -> DynamicImage {
        let img = image::RgbaImage::from_fn(w, h, |x, y| {
            let a = if alpha && x < w / 4 { 128 } else { 255 };
            let noise = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 27;
            image::Rgba([
                (x * 239 / w.max(1) + noise) as u8,
                (y * 239 / h.max(1) + noise) as u8,
                (((x / 8 + y / 8) % 2) * 200 + noise) as u8,
                a,
            ])
        });
        if alpha {
            DynamicImage::ImageRgba8(img)
        } else {
            DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(img).into_rgb8())
        }
    }

    fn encoded(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn webp_of(img: &DynamicImage) -> Vec<u8> {
        let rgb = img.to_rgb8();
        webp::Encoder::from_rgb(&rgb, rgb.width(), rgb.height())
            .encode(85.0)
            .to_vec()
    }

    fn variant(input: &[u8], query: &str, accept: Option<&str>) -> (Resolved, Transcoded) {
        let spec = VariantSpec::parse(query, WIDTHS).unwrap().unwrap();
        let (w, h) = dimensions(input).unwrap();
        let r = spec.resolve(accept, sniff(input).unwrap(), w, h);
        let t = make_variant(input, &r, &Limits::default()).unwrap();
        (r, t)
    }

    /// Decodes output bytes and checks they are `format` at `w`x`h`.
    fn assert_image(bytes: &[u8], format: Format, w: u32, h: u32) -> DynamicImage {
        assert_eq!(sniff(bytes), Some(format));
        if format == Format::Avif {
            // No AVIF decoder here: check the container header instead.
            assert_eq!(dimensions(bytes), Some((w, h)));
            return DynamicImage::new_rgb8(1, 1);
        }
        let img = image::load_from_memory(bytes).unwrap();
        assert_eq!((img.width(), img.height()), (w, h));
        img
    }

    #[test]
    fn resizes_png_webp_jpeg_inputs() {
        let pic = picture(1000, 600, false);
        let inputs = [
            (encoded(&pic, image::ImageFormat::Png), Format::Png),
            (encoded(&pic, image::ImageFormat::Jpeg), Format::Jpeg),
            (webp_of(&pic), Format::Webp),
        ];
        for (input, f) in &inputs {
            let (r, t) = variant(input, "w=256", None);
            assert_eq!((r.width, r.height, r.format), (256, 154, *f));
            assert_eq!((t.width, t.height, t.format), (256, 154, *f));
            assert_image(&t.bytes, *f, 256, 154);
            for (fmt, want) in [
                ("webp", Format::Webp),
                ("png", Format::Png),
                ("jpeg", Format::Jpeg),
            ] {
                let (_, t) = variant(input, &format!("w=128&format={fmt}"), None);
                assert_image(&t.bytes, want, 128, 77);
            }
        }
        // The committed fixtures too (64x48; 64 is the original size).
        for name in ["sample.png", "sample.jpg", "sample.webp"] {
            let input = fixture(name);
            let (r, t) = variant(&input, "w=64&format=webp&q=50", None);
            assert!(!r.same_as_original || name == "sample.webp");
            assert_image(&t.bytes, Format::Webp, 64, 48);
        }
    }

    #[test]
    fn fits_cover_and_contain() {
        let input = encoded(&picture(1000, 500, false), image::ImageFormat::Png);
        let (r, t) = variant(&input, "w=256&h=256&fit=cover&format=png", None);
        assert_eq!(r.fit, Fit::Cover);
        assert_image(&t.bytes, Format::Png, 256, 256);
        let (_, t) = variant(&input, "w=256&h=256&fit=contain&format=png", None);
        let img = assert_image(&t.bytes, Format::Png, 256, 256).to_rgba8();
        // Padding above and below is transparent; the middle is opaque.
        assert_eq!(img.get_pixel(128, 2).0[3], 0);
        assert_eq!(img.get_pixel(128, 128).0[3], 255);
        let (_, t) = variant(&input, "w=256&h=256&fit=contain&format=jpeg", None);
        let img = assert_image(&t.bytes, Format::Jpeg, 256, 256).to_rgb8();
        assert!(
            img.get_pixel(128, 2).0.iter().all(|&c| c > 240),
            "white padding"
        );
        let (_, t) = variant(&input, "w=512&h=100", None);
        assert_image(&t.bytes, Format::Png, 200, 100);
    }

    #[test]
    fn auto_format_gives_negotiated_output() {
        let input = encoded(&picture(600, 400, false), image::ImageFormat::Png);
        let (r, t) = variant(&input, "w=64&format=auto", Some("image/webp,*/*"));
        assert!(r.vary_accept);
        assert_image(&t.bytes, Format::Webp, 64, 43);
        let (_, t) = variant(&input, "w=64&format=auto", Some("image/avif,image/webp"));
        assert_image(&t.bytes, Format::Avif, 64, 43);
        let (_, t) = variant(&input, "w=64&format=auto", Some("*/*"));
        assert_image(&t.bytes, Format::Png, 64, 43);
    }

    #[test]
    fn never_upscales_and_serves_the_original() {
        let input = encoded(&picture(100, 80, false), image::ImageFormat::Png);
        let (r, t) = variant(&input, "w=2048", None);
        assert!(r.same_as_original);
        assert_eq!(t.bytes, input);
        let (_, t) = variant(&input, "w=2048&format=webp", None);
        assert_image(&t.bytes, Format::Webp, 100, 80);
        let (_, t) = variant(&input, "w=1024&h=1024&fit=cover&format=png", None);
        assert_image(&t.bytes, Format::Png, 80, 80);
    }

    #[test]
    fn pixel_bomb_is_refused_before_decoding() {
        // A valid PNG header claiming 50000x50000, then a tiny IDAT.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&50_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            let mut v = (data.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(data);
            v.extend_from_slice(&crc.sum().to_be_bytes());
            v
        };
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        assert_eq!(dimensions(&png), Some((50_000, 50_000)));

        let spec = VariantSpec::parse("w=256", WIDTHS).unwrap().unwrap();
        let r = spec.resolve(None, Format::Png, 50_000, 50_000);
        let start = Instant::now();
        let e = make_variant(&png, &r, &Limits::default()).unwrap_err();
        assert!(
            matches!(e, TranscodeError::TooManyPixels { width: 50_000, .. }),
            "{e}"
        );
        // Under a looser pixel cap the memory budget refuses it instead.
        let loose = Limits {
            max_pixels: u64::MAX,
            ..Limits::default()
        };
        let e = make_variant(&png, &r, &loose).unwrap_err();
        assert!(matches!(e, TranscodeError::OverMemoryBudget { .. }), "{e}");
        let e = convert_for_store(&png, StoreFormat::Webp, 90, &Limits::default()).unwrap_err();
        assert!(matches!(e, TranscodeError::TooManyPixels { .. }));
        // Refused from the header: no 10 GB allocation, no decode time.
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
    }

    #[test]
    fn variants_drop_exif_keep_icc() {
        let icc = fake_icc();
        let pic = picture(400, 300, false);
        // JPEG with APP1 Exif (orientation 6 = rotate 90° clockwise) and APP2 ICC.
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&exif_with(6));
        let jpeg = jpeg_with(
            &encoded(&pic, image::ImageFormat::Jpeg),
            &[(0xe1, exif), (0xe2, icc_app2(&icc))],
        );
        // Orientation 6 turns 400x300 into 300x400.
        assert_eq!(dimensions(&jpeg), Some((300, 400)));
        for fmt in ["jpeg", "webp", "png"] {
            let (_, t) = variant(&jpeg, &format!("w=128&format={fmt}"), None);
            let f = sniff(&t.bytes).unwrap();
            assert_image(&t.bytes, f, 128, 171);
            assert!(!contains(&t.bytes, b"SECRET-GPS"), "{fmt}: EXIF leaked");
            assert!(!contains(&t.bytes, b"Exif\0\0"), "{fmt}: EXIF leaked");
            assert_eq!(
                icc_of(&t.bytes, f).as_deref(),
                Some(&icc[..]),
                "{fmt}: ICC lost"
            );
        }
        // PNG with eXIf and iCCP.
        let png = png_with(
            &encoded(&pic, image::ImageFormat::Png),
            &[(b"iCCP", iccp(&icc)), (b"eXIf", exif_with(1))],
        );
        let (_, t) = variant(&png, "w=128&format=webp", None);
        assert!(!contains(&t.bytes, b"SECRET-GPS"));
        assert_eq!(icc_of(&t.bytes, Format::Webp).as_deref(), Some(&icc[..]));
        let (_, t) = variant(&png, "w=128", None);
        assert!(!contains(&t.bytes, b"SECRET-GPS") && !contains(&t.bytes, b"eXIf"));
        assert_eq!(icc_of(&t.bytes, Format::Png).as_deref(), Some(&icc[..]));
    }

    #[test]
    fn dimensions_are_upright() {
        let pic = picture(120, 60, false);
        // EXIF orientation 6 (a quarter turn) in PNG (eXIf before IDAT)...
        let png = png_with(
            &encoded(&pic, image::ImageFormat::Png),
            &[(b"eXIf", exif_with(6))],
        );
        assert_eq!(dimensions(&png), Some((60, 120)));
        // A variant has upright pixels (and no EXIF left to turn them).
        let (r, t) = variant(&png, "w=64&format=webp", None);
        assert_eq!((r.width, r.height), (60, 120));
        assert_image(&t.bytes, Format::Webp, 60, 120);
        // At the original size and format it is the original, EXIF and all.
        let (r, t) = variant(&png, "w=64&format=png", None);
        assert!(r.same_as_original);
        assert_eq!(t.bytes, png);
        // ... orientation 3 (half turn) keeps them, and no EXIF at all too.
        let png = png_with(
            &encoded(&pic, image::ImageFormat::Png),
            &[(b"eXIf", exif_with(3))],
        );
        assert_eq!(dimensions(&png), Some((120, 60)));
        assert_eq!(dimensions(&fixture("sample.webp")), Some((64, 48)));
        assert_eq!(dimensions(b"not an image"), None);
    }

    #[test]
    fn non_rgb_profiles_are_not_carried_over() {
        // A grey profile no longer matches RGB output pixels.
        let mut grey = fake_icc();
        grey[16..20].copy_from_slice(b"GRAY");
        let png = png_with(
            &encoded(&picture(200, 100, false), image::ImageFormat::Png),
            &[(b"iCCP", iccp(&grey))],
        );
        let (_, t) = variant(&png, "w=64&format=webp", None);
        assert_image(&t.bytes, Format::Webp, 64, 32);
        assert_eq!(icc_of(&t.bytes, Format::Webp), None);
    }

    #[test]
    fn ingest_stripping_keeps_icc() {
        let icc = fake_icc();
        let png = png_with(
            &fixture("sample.png"),
            &[(b"iCCP", iccp(&icc)), (b"eXIf", exif_with(1))],
        );
        let stripped = metadata::strip_metadata(&png, Format::Png);
        assert!(!contains(&stripped, b"SECRET-GPS"));
        assert_eq!(icc_of(&stripped, Format::Png).as_deref(), Some(&icc[..]));
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&exif_with(1));
        let jpeg = jpeg_with(
            &fixture("sample.jpg"),
            &[(0xe1, exif), (0xe2, icc_app2(&icc))],
        );
        let stripped = metadata::strip_metadata(&jpeg, Format::Jpeg);
        assert!(!contains(&stripped, b"SECRET-GPS"));
        assert_eq!(icc_of(&stripped, Format::Jpeg).as_deref(), Some(&icc[..]));
        // Store transcoding keeps the profile too (WebP).
        let big = png_with(
            &encoded(&picture(300, 200, false), image::ImageFormat::Png),
            &[(b"iCCP", iccp(&icc)), (b"eXIf", exif_with(1))],
        );
        let t = convert_for_store(&big, StoreFormat::Webp, 90, &Limits::default()).unwrap();
        assert_eq!(t.format, Format::Webp);
        assert!(!contains(&t.bytes, b"SECRET-GPS"));
        assert_eq!(icc_of(&t.bytes, Format::Webp).as_deref(), Some(&icc[..]));
    }

    #[test]
    fn animated_gif_gives_first_frame() {
        let mut out = Vec::new();
        {
            let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
            enc.set_repeat(image::codecs::gif::Repeat::Infinite)
                .unwrap();
            for color in [[255u8, 0, 0, 255], [0, 0, 255, 255]] {
                let frame = image::RgbaImage::from_pixel(200, 100, image::Rgba(color));
                enc.encode_frame(image::Frame::new(frame)).unwrap();
            }
        }
        assert!(metadata::is_animated(&out, Format::Gif));
        let (r, t) = variant(&out, "w=64", None);
        assert_eq!(r.format, Format::Png);
        let img = assert_image(&t.bytes, Format::Png, 64, 32).to_rgb8();
        let p = img.get_pixel(32, 16).0;
        assert!(p[0] > 200 && p[2] < 50, "first frame is red, got {p:?}");
        // Stored as is: a still WebP would lose the animation.
        let t = convert_for_store(&out, StoreFormat::Webp, 90, &Limits::default()).unwrap();
        assert_eq!((t.format, &t.bytes), (Format::Gif, &out));
    }

    #[test]
    fn animated_webp_gives_first_frame() {
        let config = webp::WebPConfig::new().unwrap();
        let red = image::RgbaImage::from_pixel(200, 100, image::Rgba([255, 0, 0, 255]));
        let blue = image::RgbaImage::from_pixel(200, 100, image::Rgba([0, 0, 255, 255]));
        let mut enc = webp::AnimEncoder::new(200, 100, &config);
        enc.add_frame(webp::AnimFrame::from_rgba(&red, 200, 100, 0));
        enc.add_frame(webp::AnimFrame::from_rgba(&blue, 200, 100, 100));
        let anim = enc.try_encode().unwrap().to_vec();
        assert!(metadata::is_animated(&anim, Format::Webp));
        let (_, t) = variant(&anim, "w=64&format=png", None);
        let img = assert_image(&t.bytes, Format::Png, 64, 32).to_rgb8();
        let p = img.get_pixel(32, 16).0;
        assert!(p[0] > 200 && p[2] < 50, "first frame is red, got {p:?}");
        let t = convert_for_store(&anim, StoreFormat::Avif, 90, &Limits::default()).unwrap();
        assert_eq!((t.format, &t.bytes), (Format::Webp, &anim));
    }

    #[test]
    fn store_formats_produce_valid_output() {
        let input = encoded(&picture(320, 240, true), image::ImageFormat::Png);
        let t = convert_for_store(&input, StoreFormat::Webp, 90, &Limits::default()).unwrap();
        assert_eq!(t.format, Format::Webp);
        let img = assert_image(&t.bytes, Format::Webp, 320, 240);
        assert!(img.color().has_alpha());
        let t = convert_for_store(&input, StoreFormat::Avif, 90, &Limits::default()).unwrap();
        assert_eq!(t.format, Format::Avif);
        assert_image(&t.bytes, Format::Avif, 320, 240);
        assert!(t.bytes.len() < input.len());
        // Original keeps the bytes; AVIF in, any target: kept.
        let t = convert_for_store(&input, StoreFormat::Original, 90, &Limits::default()).unwrap();
        assert_eq!(t.bytes, input);
        let avif = fixture("sample.avif");
        let t = convert_for_store(&avif, StoreFormat::Webp, 90, &Limits::default()).unwrap();
        assert_eq!((t.format, t.width, t.height), (Format::Avif, 64, 48));
        assert_eq!("webp".parse::<StoreFormat>(), Ok(StoreFormat::Webp));
        assert!("gif".parse::<StoreFormat>().is_err());
    }

    #[test]
    fn avif_originals_and_garbage_are_errors_not_panics() {
        let avif = fixture("sample.avif");
        let spec = VariantSpec::parse("w=64&format=webp", WIDTHS)
            .unwrap()
            .unwrap();
        let r = spec.resolve(None, Format::Avif, 64, 48);
        assert_eq!(
            make_variant(&avif, &r, &Limits::default()),
            Err(TranscodeError::CannotDecode(Format::Avif))
        );
        let png = fixture("sample.png");
        for cut in [0, 8, 20, 40, png.len() - 20] {
            let _ = make_variant(&png[..cut], &r, &Limits::default());
        }
        assert_eq!(
            make_variant(b"hello", &r, &Limits::default()),
            Err(TranscodeError::UnknownFormat)
        );
    }

    #[test]
    fn corrupted_inputs_give_errors_not_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let spec = VariantSpec::parse("w=64&h=64&fit=cover&format=webp", WIDTHS)
            .unwrap()
            .unwrap();
        for name in ["sample.png", "sample.jpg", "sample.webp", "sample.gif"] {
            let bytes = fixture(name);
            for _ in 0..150 {
                let mut b = bytes.clone();
                for _ in 0..1 + next() % 3 {
                    let at = 16 + (next() % (b.len() as u64 - 16)) as usize;
                    b[at] = next() as u8;
                }
                let Some((w, h)) = dimensions(&b) else {
                    continue;
                };
                let r = spec.resolve(None, sniff(&b).unwrap(), w, h);
                let out = make_variant(&b, &r, &Limits::default());
                assert_ne!(out, Err(TranscodeError::Panicked), "{name}");
                let out = convert_for_store(&b, StoreFormat::Webp, 90, &Limits::default());
                assert_ne!(out, Err(TranscodeError::Panicked), "{name}");
            }
        }
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// An iCCP chunk body: name, compression method 0, zlib data.
    fn iccp(icc: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(icc).unwrap();
        let mut v = b"test\0\0".to_vec();
        v.extend_from_slice(&z.finish().unwrap());
        v
    }

    fn icc_of(bytes: &[u8], f: Format) -> Option<Vec<u8>> {
        let c = Cursor::new(bytes);
        match f {
            Format::Png => image::codecs::png::PngDecoder::new(c)
                .ok()?
                .icc_profile()
                .ok()?,
            Format::Jpeg => image::codecs::jpeg::JpegDecoder::new(c)
                .ok()?
                .icc_profile()
                .ok()?,
            Format::Webp => image::codecs::webp::WebPDecoder::new(c)
                .ok()?
                .icc_profile()
                .ok()?,
            _ => None,
        }
    }
}
