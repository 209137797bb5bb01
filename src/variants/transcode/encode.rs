//! Encoding decoded, resized pixels: WebP through libwebp, AVIF through
//! ravif (converted to sRGB first, since ravif writes no ICC), JPEG and PNG
//! through the `image` crate's encoders, with the colour profile carried
//! over where the format holds one.

use super::*;

/// rav1e speed (1 slowest..10 fastest), for variants and ingest alike.
/// Measured on a 1024 px picture (benches/variants/README.md): speed 10
/// encodes in about a tenth of the time of speed 8 for files ~15% larger;
/// a variant is made while a client waits and ingest can be on the
/// response path, so time wins.
pub const AVIF_SPEED: u8 = 10;

pub(super) fn encode(
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
