//! Lossless metadata stripping by byte surgery: the pixels are never decoded
//! or re-encoded, only container chunks/segments are dropped. Pure, and it
//! never panics: input it does not fully understand comes back unchanged.
//!
//! What is dropped and what is kept, per format:
//!
//! | format | dropped | kept |
//! |---|---|---|
//! | PNG | `tEXt` `zTXt` `iTXt` `eXIf` `tIME`, bytes after `IEND` | everything else: `iCCP` `sRGB` `gAMA` `cHRM` `pHYs`, APNG chunks |
//! | JPEG | APP1 (EXIF, XMP), APP3–APP13, APP15, `COM`, APP2 other than `ICC_PROFILE` (e.g. MPF), bytes after `EOI` | APP0 (JFIF), APP2 `ICC_PROFILE`, APP14 (Adobe colour transform), all coding segments |
//! | WebP | `EXIF` and `XMP ` chunks (VP8X flags and the RIFF size fixed) | `ICCP`, animation, alpha, image data |
//! | GIF | comment extensions, application extensions other than `NETSCAPE2.0`/`ANIMEXTS1.0` (looping) and `ICCRGBG1012` (ICC) | frames, graphic control, looping |
//! | AVIF | nothing: EXIF/XMP live in ISOBMFF `meta` items whose removal means rewriting `iloc` offsets; left as is | everything |
//!
//! One piece of EXIF matters for display: the orientation. When the EXIF
//! says the picture is rotated or mirrored (orientation 2..=8), a minimal
//! EXIF holding only that tag (26 bytes, nothing else) replaces it, so the
//! stripped file still displays upright. Variants do not need this: their
//! pixels are rotated before encoding.

use crate::image_format::Format;
use std::borrow::Cow;

/// Strips metadata, keeping colour profiles. Returns the input borrowed when
/// there is nothing to strip, the format is AVIF, or the bytes are not a
/// well-formed file of `format`.
pub fn strip_metadata(input: &[u8], format: Format) -> Cow<'_, [u8]> {
    let out = match format {
        Format::Png => strip_png(input),
        Format::Jpeg => strip_jpeg(input),
        Format::Webp => strip_webp(input),
        Format::Gif => strip_gif(input),
        Format::Avif => None,
    };
    match out {
        Some(v) if v.as_slice() != input => Cow::Owned(v),
        _ => Cow::Borrowed(input),
    }
}

/// Whether the file has more than one frame (animated GIF, animated WebP,
/// APNG). Malformed input says `false`.
pub fn is_animated(input: &[u8], format: Format) -> bool {
    match format {
        Format::Gif => gif_frame_count(input).is_some_and(|n| n > 1),
        Format::Webp => {
            // VP8X must be the first chunk; its flag 0x02 means animation.
            input.len() >= 21 && &input[12..16] == b"VP8X" && input[20] & 0x02 != 0
        }
        Format::Png => png_chunks(input).is_some_and(|c| c.iter().any(|c| c.kind == *b"acTL")),
        Format::Jpeg | Format::Avif => false,
    }
}

/// The EXIF orientation (1..=8) stored in the file's container, read the
/// way the decoders read it: JPEG APP1 before the first scan, PNG `eXIf`
/// before the first `IDAT`, WebP `EXIF` chunk. `None` if absent.
pub fn orientation(input: &[u8], format: Format) -> Option<u16> {
    match format {
        Format::Jpeg => jpeg_exif(input).and_then(exif_orientation),
        Format::Png => {
            let chunks = png_chunks(input)?;
            let exif = chunks
                .iter()
                .take_while(|c| c.kind != *b"IDAT")
                .find(|c| c.kind == *b"eXIf")?;
            exif_orientation(exif.data)
        }
        Format::Webp => {
            let chunks = webp_chunks(input)?;
            let (_, raw) = chunks.iter().find(|(k, _)| *k == b"EXIF")?;
            let len = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?) as usize;
            exif_orientation(raw.get(8..8usize.checked_add(len)?)?)
        }
        Format::Gif | Format::Avif => None,
    }
}

/// The payload of the first APP1 `Exif` segment before the first scan.
fn jpeg_exif(input: &[u8]) -> Option<&[u8]> {
    if !input.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut i = 2;
    loop {
        if *input.get(i)? != 0xff {
            return None;
        }
        while *input.get(i + 1)? == 0xff {
            i += 1;
        }
        let marker = *input.get(i + 1)?;
        if matches!(marker, 0x01 | 0xd0..=0xd7) {
            i += 2;
            continue;
        }
        if matches!(marker, 0xda | 0xd9 | 0xd8 | 0x00) {
            return None;
        }
        let len = u16::from_be_bytes([*input.get(i + 2)?, *input.get(i + 3)?]) as usize;
        let end = i.checked_add(2 + len.max(2))?;
        let payload = input.get(i + 4..end)?;
        if marker == 0xe1 && payload.starts_with(b"Exif\0\0") {
            return Some(payload);
        }
        i = end;
    }
}

// ---------------------------------------------------------------- EXIF ---

/// The orientation (1..=8) in an EXIF blob (TIFF data, with or without the
/// `Exif\0\0` prefix used in JPEG).
pub fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let big = match tiff.get(0..4)? {
        b"MM\0*" => true,
        b"II*\0" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at.checked_add(2)?)?;
        Some(if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at.checked_add(4)?)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count.min(512) {
        let entry = ifd.checked_add(2 + i * 12)?;
        if u16_at(entry)? == 0x0112 {
            // SHORT, count 1: the value sits in the first two value bytes.
            if u16_at(entry + 2)? != 3 {
                return None;
            }
            let v = u16_at(entry + 8)?;
            return (1..=8).contains(&v).then_some(v);
        }
    }
    None
}

/// A minimal big-endian TIFF/EXIF blob holding only the orientation tag.
pub fn orientation_exif(orientation: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(26);
    v.extend_from_slice(b"MM\0*");
    v.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
    v.extend_from_slice(&1u16.to_be_bytes()); // one entry
    v.extend_from_slice(&0x0112u16.to_be_bytes());
    v.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&orientation.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    v
}

/// Orientation worth keeping: 2..=8 (1 is the default).
fn kept_orientation(exif: &[u8]) -> Option<u16> {
    exif_orientation(exif).filter(|&o| o != 1)
}

// ----------------------------------------------------------------- PNG ---

const PNG_SIG: &[u8] = b"\x89PNG\r\n\x1a\n";

struct PngChunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// The whole chunk: length, type, data, CRC.
    raw: &'a [u8],
}

/// Chunks up to and including `IEND`, or `None` when malformed.
fn png_chunks(input: &[u8]) -> Option<Vec<PngChunk<'_>>> {
    let mut rest = input.strip_prefix(PNG_SIG)?;
    let mut chunks = Vec::new();
    loop {
        let len = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let total = len.checked_add(12)?;
        let raw = rest.get(..total)?;
        let kind: [u8; 4] = raw[4..8].try_into().ok()?;
        let data = &raw[8..8 + len];
        chunks.push(PngChunk { kind, data, raw });
        rest = &rest[total..];
        if kind == *b"IEND" {
            return Some(chunks);
        }
    }
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut v = Vec::with_capacity(data.len() + 12);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(kind);
    v.extend_from_slice(data);
    v.extend_from_slice(&crc.sum().to_be_bytes());
    v
}

fn strip_png(input: &[u8]) -> Option<Vec<u8>> {
    let chunks = png_chunks(input)?;
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(PNG_SIG);
    for c in &chunks {
        match &c.kind {
            b"tEXt" | b"zTXt" | b"iTXt" | b"tIME" => {}
            b"eXIf" => {
                if let Some(o) = kept_orientation(c.data) {
                    out.extend_from_slice(&png_chunk(b"eXIf", &orientation_exif(o)));
                }
            }
            _ => out.extend_from_slice(c.raw),
        }
    }
    Some(out)
}

// ---------------------------------------------------------------- JPEG ---

fn strip_jpeg(input: &[u8]) -> Option<Vec<u8>> {
    if !input.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..2]);
    let mut i = 2;
    loop {
        // Fill bytes (0xff runs) may precede a marker.
        if *input.get(i)? != 0xff {
            return None;
        }
        while *input.get(i + 1)? == 0xff {
            i += 1;
        }
        let marker = *input.get(i + 1)?;
        match marker {
            // Standalone markers: TEM, RSTn.
            0x01 | 0xd0..=0xd7 => {
                out.extend_from_slice(&input[i..i + 2]);
                i += 2;
                continue;
            }
            0xd8 | 0xd9 | 0x00 => return None,
            _ => {}
        }
        let len = u16::from_be_bytes([*input.get(i + 2)?, *input.get(i + 3)?]) as usize;
        if len < 2 {
            return None;
        }
        let end = i.checked_add(2 + len)?;
        let segment = input.get(i..end)?;
        let payload = &segment[4..];
        if marker == 0xda {
            // Start of scan: copy the rest up to EOI verbatim (entropy-coded
            // data; a progressive file's later scans and tables included).
            let eoi = find_eoi(input, end)?;
            out.extend_from_slice(&input[i..eoi]);
            return Some(out);
        }
        let keep = match marker {
            0xe0 | 0xee => true,                           // APP0 JFIF, APP14 Adobe
            0xe2 => payload.starts_with(b"ICC_PROFILE\0"), // APP2: ICC only
            0xe1 => {
                if payload.starts_with(b"Exif\0\0") {
                    if let Some(o) = kept_orientation(payload) {
                        let mut exif = b"Exif\0\0".to_vec();
                        exif.extend_from_slice(&orientation_exif(o));
                        out.extend_from_slice(&[0xff, 0xe1]);
                        out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
                        out.extend_from_slice(&exif);
                    }
                }
                false
            }
            0xe3..=0xef | 0xfe => false, // other APPn, COM
            _ => true,                   // tables, frame headers, DRI...
        };
        if keep {
            out.extend_from_slice(segment);
        }
        i = end;
    }
}

/// Offset just past the EOI marker, scanning entropy-coded data from `from`.
/// In scan data 0xff is always followed by 0x00 (stuffing) or a marker, so
/// the first `ff d9` is the end of the image.
fn find_eoi(input: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < input.len() {
        let at = memchr::memchr(0xff, input.get(i..input.len() - 1)?)?;
        i += at;
        if input[i + 1] == 0xd9 {
            return Some(i + 2);
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------- WebP ---

const VP8X_ICC: u8 = 0x20;
const VP8X_ALPHA: u8 = 0x10;
const VP8X_EXIF: u8 = 0x08;
const VP8X_XMP: u8 = 0x04;

/// RIFF chunks of a WebP file (each with its padding byte), or `None`.
fn webp_chunks(input: &[u8]) -> Option<Vec<(&[u8; 4], &[u8])>> {
    if input.len() < 12 || &input[0..4] != b"RIFF" || &input[8..12] != b"WEBP" {
        return None;
    }
    let riff_len = u32::from_le_bytes(input[4..8].try_into().ok()?) as usize;
    let end = riff_len.checked_add(8)?.min(input.len());
    let mut rest = input.get(12..end)?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let kind: &[u8; 4] = rest.get(0..4)?.try_into().ok()?;
        let len = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
        let padded = len.checked_add(len & 1)?.checked_add(8)?;
        // The last chunk's padding byte is sometimes missing.
        let take = padded.min(rest.len());
        if take < len + 8 {
            return None;
        }
        chunks.push((kind, &rest[..take]));
        rest = &rest[take..];
    }
    Some(chunks)
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = chunks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(body + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((body + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

fn webp_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 9);
    v.extend_from_slice(kind);
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    if data.len() % 2 == 1 {
        v.push(0);
    }
    v
}

fn strip_webp(input: &[u8]) -> Option<Vec<u8>> {
    let chunks = webp_chunks(input)?;
    let (first, _) = chunks.first()?;
    if *first != b"VP8X" {
        // Simple format: a single VP8/VP8L chunk, no room for metadata.
        return None;
    }
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(chunks.len());
    let mut orientation = None;
    for (kind, raw) in &chunks {
        match *kind {
            b"EXIF" => {
                let len = u32::from_le_bytes(raw[4..8].try_into().ok()?) as usize;
                orientation = kept_orientation(raw.get(8..8 + len)?);
            }
            b"XMP " => {}
            _ => out.push(raw.to_vec()),
        }
    }
    let vp8x = out.first_mut()?;
    let flags = vp8x.get_mut(8)?;
    *flags &= !(VP8X_EXIF | VP8X_XMP);
    if let Some(o) = orientation {
        *flags |= VP8X_EXIF;
        out.push(webp_chunk(b"EXIF", &orientation_exif(o)));
    }
    Some(riff(&out))
}

/// Adds an ICC profile to a still WebP made by libwebp (simple `VP8 `/`VP8L`
/// or extended `VP8X`+`ALPH`+`VP8 `), converting it to the extended format.
/// `None` when the input is not such a file.
pub fn webp_with_icc(webp: &[u8], icc: &[u8], width: u32, height: u32) -> Option<Vec<u8>> {
    if width == 0 || height == 0 || width > 1 << 24 || height > 1 << 24 {
        return None;
    }
    let chunks = webp_chunks(webp)?;
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(chunks.len() + 2);
    let (first, raw) = chunks.first()?;
    let rest = &chunks[1..];
    match *first {
        b"VP8X" => {
            let mut vp8x = raw.to_vec();
            *vp8x.get_mut(8)? |= VP8X_ICC;
            out.push(vp8x);
        }
        b"VP8 " | b"VP8L" => {
            // VP8L keeps an alpha bit in its header (bit 28 after 0x2f).
            let alpha = *first == b"VP8L" && raw.get(12).is_some_and(|b| b & 0x10 != 0);
            let mut data = vec![VP8X_ICC | if alpha { VP8X_ALPHA } else { 0 }, 0, 0, 0];
            data.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
            data.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
            out.push(webp_chunk(b"VP8X", &data));
        }
        _ => return None,
    }
    if rest.iter().any(|(k, _)| *k == b"ICCP") {
        return None;
    }
    out.push(webp_chunk(b"ICCP", icc));
    if *first != b"VP8X" {
        out.push(raw.to_vec());
    }
    out.extend(rest.iter().map(|(_, raw)| raw.to_vec()));
    Some(riff(&out))
}

// ----------------------------------------------------------------- GIF ---

/// Walks a GIF's blocks, calling `keep` on each (block bytes, kind) and
/// copying the kept ones. Returns the frame count too. `None` if malformed.
fn walk_gif(input: &[u8], mut out: Option<&mut Vec<u8>>) -> Option<usize> {
    if !(input.starts_with(b"GIF87a") || input.starts_with(b"GIF89a")) {
        return None;
    }
    let packed = *input.get(10)?;
    let mut i = 13;
    if packed & 0x80 != 0 {
        i += 3 << ((packed & 0x07) + 1);
    }
    let header = input.get(..i)?;
    if let Some(o) = out.as_deref_mut() {
        o.extend_from_slice(header);
    }
    // Skips data sub-blocks starting at `at`; returns the offset past the
    // terminator.
    let sub_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let n = *input.get(at)? as usize;
            at += 1 + n;
            if n == 0 {
                return (at <= input.len()).then_some(at);
            }
        }
    };
    let mut frames = 0;
    loop {
        let start = i;
        let keep = match *input.get(i)? {
            0x3b => {
                if let Some(o) = out.as_deref_mut() {
                    o.push(0x3b);
                }
                return Some(frames);
            }
            0x2c => {
                frames += 1;
                let packed = *input.get(i + 9)?;
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 << ((packed & 0x07) + 1);
                }
                input.get(i)?; // LZW minimum code size
                i = sub_blocks(i + 1)?;
                true
            }
            0x21 => {
                let label = *input.get(i + 1)?;
                let keep = match label {
                    0xfe => false, // comment
                    0xff => {
                        // Application: first sub-block is the 11-byte id.
                        let id = input.get(i + 3..i + 14)?;
                        matches!(id, b"NETSCAPE2.0" | b"ANIMEXTS1.0" | b"ICCRGBG1012")
                    }
                    _ => true, // graphic control, plain text
                };
                i = sub_blocks(i + 2)?;
                keep
            }
            _ => return None,
        };
        if keep {
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(input.get(start..i)?);
            }
        }
    }
}

fn gif_frame_count(input: &[u8]) -> Option<usize> {
    walk_gif(input, None)
}

fn strip_gif(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    walk_gif(input, Some(&mut out))?;
    Some(out)
}

// --------------------------------------------------------------- tests ---

#[cfg(test)]
pub(crate) mod tests {
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
        let mut dec =
            image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&out[..])).unwrap();
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
        let icc = fake_icc();
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&exif_with(6));
        let inputs = [
            (
                png_with(&fixture("sample.png"), &[(b"eXIf", exif_with(6))]),
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
        ];
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
        let icc = fake_icc();
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&exif_with(3));
        let inputs = [
            (
                png_with(&fixture("sample.png"), &[(b"eXIf", exif_with(3))]),
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
        ];
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
}
