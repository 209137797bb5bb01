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
pub(crate) mod tests;
