use super::super::metadata::tests::{exif_with, fake_icc, fixture, icc_app2, jpeg_with, png_with};
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
