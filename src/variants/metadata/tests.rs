use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

/// A fake ICC profile: only its bytes matter to these tests.
pub(crate) fn fake_icc() -> Vec<u8> {
    let mut icc = vec![0u8; 200];
    icc[16..20].copy_from_slice(b"RGB ");
    icc[36..40].copy_from_slice(b"acsp");
    icc[100..120].copy_from_slice(b"permaproxy-test-icc!");
    icc
}

/// An EXIF blob with orientation and a GPS-ish private string.
pub(crate) fn exif_with(orientation: u16) -> Vec<u8> {
    let mut v = orientation_exif(orientation);
    v.extend_from_slice(b"SECRET-GPS-48.8584N-2.2945E");
    v
}

/// Inserts chunks into a PNG right after IHDR.
pub(crate) fn png_with(png: &[u8], extra: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let ihdr_end = 8 + 25;
    let mut out = png[..ihdr_end].to_vec();
    for (k, d) in extra {
        out.extend_from_slice(&png_chunk(k, d));
    }
    out.extend_from_slice(&png[ihdr_end..]);
    out
}

/// Inserts APPn segments into a JPEG right after SOI (and APP0 if any).
pub(crate) fn jpeg_with(jpeg: &[u8], segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut at = 2;
    if jpeg[2..4] == [0xff, 0xe0] {
        at += 2 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    }
    let mut out = jpeg[..at].to_vec();
    for (m, d) in segments {
        out.extend_from_slice(&[0xff, *m]);
        out.extend_from_slice(&((d.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

pub(crate) fn icc_app2(icc: &[u8]) -> Vec<u8> {
    let mut d = b"ICC_PROFILE\0\x01\x01".to_vec();
    d.extend_from_slice(icc);
    d
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn png_drops_text_and_exif_keeps_icc() {
    let base = fixture("sample.png");
    let mut iccp = b"icc\0\0".to_vec();
    iccp.extend_from_slice(&fake_icc()); // (not really zlib; bytes only)
    let png = png_with(
        &base,
        &[
            (b"iCCP", iccp.clone()),
            (b"eXIf", exif_with(1)),
            (b"tEXt", b"Comment\0made by a secret prompt".to_vec()),
            (b"tIME", vec![7, 0xe9, 1, 1, 0, 0, 0]),
        ],
    );
    let out = strip_metadata(&png, Format::Png);
    assert!(matches!(out, Cow::Owned(_)));
    assert!(!contains(&out, b"SECRET-GPS"));
    assert!(!contains(&out, b"secret prompt"));
    assert!(!contains(&out, b"tIME"));
    assert!(!contains(&out, b"eXIf"));
    assert!(contains(&out, &png_chunk(b"iCCP", &iccp)));
    // Everything else is byte-identical: stripping again changes nothing.
    assert!(matches!(
        strip_metadata(&out, Format::Png),
        Cow::Borrowed(_)
    ));
    assert_eq!(out.len(), base.len() + iccp.len() + 12);
    // The result still decodes to the same pixels.
    let a = image::load_from_memory(&base).unwrap().to_rgba8();
    let b = image::load_from_memory(&out).unwrap().to_rgba8();
    assert_eq!(a, b);
}

#[test]
fn rotated_exif_keeps_only_orientation() {
    let png = png_with(&fixture("sample.png"), &[(b"eXIf", exif_with(6))]);
    let out = strip_metadata(&png, Format::Png);
    assert!(!contains(&out, b"SECRET-GPS"));
    assert!(contains(&out, &png_chunk(b"eXIf", &orientation_exif(6))));

    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&exif_with(8));
    let jpeg = jpeg_with(&fixture("sample.jpg"), &[(0xe1, exif)]);
    let out = strip_metadata(&jpeg, Format::Jpeg);
    assert!(!contains(&out, b"SECRET-GPS"));
    let mut minimal = b"Exif\0\0".to_vec();
    minimal.extend_from_slice(&orientation_exif(8));
    assert!(contains(&out, &minimal));
    assert_eq!(exif_orientation(&minimal), Some(8));
}

#[test]
fn jpeg_drops_exif_xmp_iptc_comments_keeps_icc() {
    let base = fixture("sample.jpg");
    let icc = fake_icc();
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&exif_with(1));
    let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    xmp.extend_from_slice(b"<x:xmpmeta>SECRET-XMP</x:xmpmeta>");
    let jpeg = jpeg_with(
        &base,
        &[
            (0xe1, exif),
            (0xe2, icc_app2(&icc)),
            (0xe1, xmp),
            (0xed, b"Photoshop 3.0\0SECRET-IPTC".to_vec()),
            (0xfe, b"SECRET-COMMENT".to_vec()),
            (0xee, b"Adobe\0\x64\0\0\0\0\x01".to_vec()),
        ],
    );
    let mut with_trailer = jpeg.clone();
    with_trailer.extend_from_slice(b"TRAILING-SECRET");
    let out = strip_metadata(&with_trailer, Format::Jpeg);
    for s in [
        &b"SECRET-GPS"[..],
        b"SECRET-XMP",
        b"SECRET-IPTC",
        b"SECRET-COMMENT",
        b"TRAILING",
    ] {
        assert!(!contains(&out, s), "{}", String::from_utf8_lossy(s));
    }
    assert!(contains(&out, &icc_app2(&icc)));
    assert!(contains(&out, b"Adobe\0"));
    assert!(contains(&out, b"JFIF\0"));
    assert!(out.ends_with(&[0xff, 0xd9]));
    let a = image::load_from_memory(&base).unwrap().to_rgb8();
    let b = image::load_from_memory(&out).unwrap().to_rgb8();
    assert_eq!(a, b);
    // Nothing to strip in the plain fixture.
    assert!(matches!(
        strip_metadata(&base, Format::Jpeg),
        Cow::Borrowed(_)
    ));
}

#[test]
fn webp_drops_exif_xmp_fixes_flags_keeps_icc() {
    let simple = fixture("sample.webp");
    // Plain VP8 has no metadata.
    assert!(matches!(
        strip_metadata(&simple, Format::Webp),
        Cow::Borrowed(_)
    ));
    let icc = fake_icc();
    let with_icc = webp_with_icc(&simple, &icc, 64, 48).unwrap();
    // Add EXIF and XMP chunks by hand, with their VP8X flags.
    let chunks = webp_chunks(&with_icc).unwrap();
    let mut parts: Vec<Vec<u8>> = chunks.iter().map(|(_, r)| r.to_vec()).collect();
    parts[0][8] |= VP8X_EXIF | VP8X_XMP;
    parts.push(webp_chunk(b"EXIF", &exif_with(1)));
    parts.push(webp_chunk(b"XMP ", b"<x:xmpmeta>SECRET-XMP</x:xmpmeta>!"));
    let full = riff(&parts);
    let out = strip_metadata(&full, Format::Webp);
    assert!(!contains(&out, b"SECRET-GPS") && !contains(&out, b"SECRET-XMP"));
    assert!(contains(&out, &webp_chunk(b"ICCP", &icc)));
    let out_chunks = webp_chunks(&out).unwrap();
    assert_eq!(out_chunks[0].1[8], VP8X_ICC);
    assert_eq!(out, with_icc);
    // RIFF size is consistent, and the file decodes with its profile.
    assert_eq!(
        u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize,
        out.len() - 8
    );
    use image::ImageDecoder;
    let mut dec = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&out[..])).unwrap();
    assert_eq!(dec.icc_profile().unwrap(), Some(icc));
    assert_eq!(dec.dimensions(), (64, 48));
}

#[test]
fn gif_drops_comments_and_foreign_app_extensions() {
    let base = fixture("sample.gif");
    // Insert a comment and an XMP application extension before the trailer.
    let mut gif = base[..base.len() - 1].to_vec();
    gif.extend_from_slice(&[0x21, 0xfe, 14]);
    gif.extend_from_slice(b"SECRET-COMMENT");
    gif.push(0);
    gif.extend_from_slice(&[0x21, 0xff, 11]);
    gif.extend_from_slice(b"XMP DataXMP");
    gif.extend_from_slice(&[10]);
    gif.extend_from_slice(b"SECRET-XMP");
    gif.push(0);
    gif.extend_from_slice(&[0x21, 0xff, 11]);
    gif.extend_from_slice(b"NETSCAPE2.0");
    gif.extend_from_slice(&[3, 1, 0, 0, 0]);
    gif.push(0x3b);
    let out = strip_metadata(&gif, Format::Gif);
    assert!(!contains(&out, b"SECRET"));
    assert!(contains(&out, b"NETSCAPE2.0"));
    assert_eq!(gif_frame_count(&out), Some(1));
    let a = image::load_from_memory(&base).unwrap().to_rgba8();
    let b = image::load_from_memory(&out).unwrap().to_rgba8();
    assert_eq!(a, b);
}

#[test]
fn avif_and_garbage_are_left_alone() {
    let avif = fixture("sample.avif");
    assert!(matches!(
        strip_metadata(&avif, Format::Avif),
        Cow::Borrowed(_)
    ));
    for f in Format::ALL {
        for bytes in [
            &b""[..],
            b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHD",
            b"\xff\xd8\xff\xe1\xff\xff",
            b"\xff\xd8\xff",
            b"RIFF\xff\xff\xff\xffWEBPVP8X\x0a\0\0\0",
            b"GIF89a\x01\0\x01\0\xff",
        ] {
            assert_eq!(&*strip_metadata(bytes, f), bytes);
            let _ = is_animated(bytes, f);
        }
    }
    assert_eq!(exif_orientation(b"MM\0*\xff\xff\xff\xff"), None);
    assert_eq!(exif_orientation(b""), None);
}

/// One fixture per format carrying metadata (EXIF with `orientation`, and
/// an ICC profile where the format holds one), for the corruption tests.
fn tagged_inputs(orientation: u16) -> Vec<(Vec<u8>, Format)> {
    let icc = fake_icc();
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&exif_with(orientation));
    vec![
        (
            png_with(&fixture("sample.png"), &[(b"eXIf", exif_with(orientation))]),
            Format::Png,
        ),
        (
            jpeg_with(
                &fixture("sample.jpg"),
                &[(0xe1, exif), (0xe2, icc_app2(&icc))],
            ),
            Format::Jpeg,
        ),
        (
            webp_with_icc(&fixture("sample.webp"), &icc, 64, 48).unwrap(),
            Format::Webp,
        ),
        (fixture("sample.gif"), Format::Gif),
    ]
}

#[test]
fn random_corruption_never_panics() {
    // Deterministic xorshift, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let inputs = tagged_inputs(6);
    for (bytes, f) in &inputs {
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % b.len() as u64) as usize;
                b[at] = next() as u8;
            }
            let _ = strip_metadata(&b, *f);
            let _ = is_animated(&b, *f);
            let _ = orientation(&b, *f);
            let _ = super::super::transcode::dimensions(&b);
        }
    }
}

#[test]
fn truncations_never_panic() {
    let inputs = tagged_inputs(3);
    for (bytes, f) in inputs {
        for cut in 0..bytes.len() {
            let _ = strip_metadata(&bytes[..cut], f);
            let _ = is_animated(&bytes[..cut], f);
        }
        // Flipped bytes too.
        for at in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            let _ = strip_metadata(&b, f);
        }
    }
}
