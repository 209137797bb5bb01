//! Metadata and storage format: EXIF (and its GPS) never leaves in a
//! variant, ICC profiles stay so colours do not shift, IMAGE_STRIP_METADATA
//! does the same to images as they are stored, and IMAGE_STORE_FORMAT=webp
//! stores WebP under a `.webp` URL.

use crate::common::*;
use crate::{decoded, get, host, stands};
use image::ImageDecoder;

const SECRET: &[u8] = b"SECRET-GPS-48.8584N-2.2945E";

/// A fake RGB ICC profile: only its bytes matter here.
fn icc() -> Vec<u8> {
    let mut icc = vec![0u8; 200];
    icc[16..20].copy_from_slice(b"RGB ");
    icc[36..40].copy_from_slice(b"acsp");
    icc[100..124].copy_from_slice(b"permaproxy-test-profile!");
    icc
}

/// The photograph as a JPEG with EXIF (holding a private string) and an
/// ICC profile, as a camera or an editor writes them.
fn jpeg_with_exif_and_icc() -> Vec<u8> {
    let jpeg = crate::photo_as(image::ImageFormat::Jpeg);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&permaproxy::variants::metadata::orientation_exif(1));
    exif.extend_from_slice(SECRET);
    let mut app2 = b"ICC_PROFILE\0\x01\x01".to_vec();
    app2.extend_from_slice(&icc());
    // After SOI and the JFIF APP0.
    let at = 2 + 2 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    let mut out = jpeg[..at].to_vec();
    for (marker, data) in [(0xe1u8, exif), (0xe2, app2)] {
        out.extend_from_slice(&[0xff, marker]);
        out.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The ICC profile the body carries, read by the decoder of its format.
fn profile_of(body: &[u8]) -> Option<Vec<u8>> {
    let c = std::io::Cursor::new(body);
    match image::guess_format(body).ok()? {
        image::ImageFormat::Jpeg => image::codecs::jpeg::JpegDecoder::new(c).ok()?.icc_profile(),
        image::ImageFormat::Png => image::codecs::png::PngDecoder::new(c).ok()?.icc_profile(),
        image::ImageFormat::WebP => image::codecs::webp::WebPDecoder::new(c).ok()?.icc_profile(),
        _ => return None,
    }
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_drop_exif_and_keep_icc() {
    // Ingest stripping off, so the stored original still has both.
    let s = stands(&[("IMAGE_STRIP_METADATA", "false")]).await;
    let input = jpeg_with_exif_and_icc();
    let h = host(&s, "camera.jpg", &input, "mia").await;
    let original = get(&s.proxy, &h, "", &[]).await;
    assert_same_bytes(&original.body, &input, "stored as downloaded");
    assert!(contains(&original.body, SECRET));
    for (query, format) in [
        ("w=128", image::ImageFormat::Jpeg),
        ("w=128&format=webp", image::ImageFormat::WebP),
        ("w=128&format=png", image::ImageFormat::Png),
    ] {
        let r = get(&s.proxy, &h, query, &[]).await;
        assert_eq!(decoded(&r), (format, 128, 85), "?{query}");
        assert!(!contains(&r.body, SECRET), "?{query}: EXIF left in");
        assert!(!contains(&r.body, b"Exif\0\0"), "?{query}: an EXIF block");
        assert_eq!(profile_of(&r.body), Some(icc()), "?{query}: ICC profile");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_strips_exif_and_keeps_icc() {
    let s = stands(&[]).await; // IMAGE_STRIP_METADATA defaults to true
    let input = jpeg_with_exif_and_icc();
    let h = host(&s, "camera.jpg", &input, "ned").await;
    assert_eq!(h.ext, "jpg");
    let r = get(&s.proxy, &h, "", &[]).await;
    assert_eq!(r.status, 200);
    assert!(!contains(&r.body, SECRET), "EXIF stored");
    assert_eq!(profile_of(&r.body), Some(icc()));
    assert!(r.body.len() < input.len());
    assert_eq!(r.h("content-length"), r.body.len().to_string());
    assert_eq!(
        r.h("etag"),
        format!("\"{}\"", &sha256_hex(&r.body)[..32]),
        "the ETag is of the stored bytes"
    );
    // The pixels are untouched: stripping is byte surgery, not a re-encode.
    let before = image::load_from_memory(&input).unwrap().to_rgb8();
    let after = image::load_from_memory(&r.body).unwrap().to_rgb8();
    assert!(before == after, "pixels changed");
}

/// Peak signal-to-noise ratio of `b` against `a`, in dB.
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = se / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_format_webp_stores_webp_and_saves_bytes() {
    let s = stands(&[("IMAGE_STORE_FORMAT", "webp")]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "olga").await;
    assert_eq!(h.ext, "webp", "the hosted URL carries the stored format");
    let r = get(&s.proxy, &h, "", &[]).await;
    assert_eq!(decoded(&r), (image::ImageFormat::WebP, 451, 300));
    assert_eq!(r.h("content-type"), "image/webp");
    let original = image::load_from_memory(crate::PHOTO).unwrap().to_rgb8();
    let stored = image::load_from_memory(&r.body).unwrap().to_rgb8();
    let db = psnr(&original, &stored);
    let kept = r.body.len() as f64 / crate::PHOTO.len() as f64;
    eprintln!(
        "IMAGE_STORE_FORMAT=webp (q90) on photo.png: {} -> {} bytes ({:.1} % kept), PSNR {db:.1} dB",
        crate::PHOTO.len(),
        r.body.len(),
        kept * 100.0
    );
    assert!(kept < 0.3, "kept {:.1} %", kept * 100.0);
    assert!(db > 32.0, "PSNR {db:.1} dB");
    assert_eq!(
        s.proxy
            .metric("permaproxy_transcode_duration_seconds_count")
            .await,
        1.0
    );
    // Its variants are made from the stored WebP.
    let v = get(&s.proxy, &h, "w=128", &[]).await;
    assert_eq!(decoded(&v), (image::ImageFormat::WebP, 128, 85));
    // A second generate handing out the same source gets the same URL.
    let again = host(&s, "photo.png", crate::PHOTO, "olga").await;
    assert_eq!(again.path, h.path);
}
