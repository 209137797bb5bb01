//! Real image bytes (committed files, made by `tests/fixtures/make_fixtures.py`)
//! and PNGs generated at test time without any image library.

use super::util::{big_bytes, crc32, crc32_update};

pub const PNG: &[u8] = include_bytes!("../fixtures/sample.png");
pub const JPEG: &[u8] = include_bytes!("../fixtures/sample.jpg");
pub const WEBP: &[u8] = include_bytes!("../fixtures/sample.webp");
pub const GIF: &[u8] = include_bytes!("../fixtures/sample.gif");
pub const AVIF: &[u8] = include_bytes!("../fixtures/sample.avif");

/// An HTML error page, the kind a CDN answers instead of an image.
pub const HTML: &[u8] =
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1></body></html>\n";

/// An SVG (refused: scriptable, not a raster image).
pub const SVG: &[u8] = b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><script>alert(1)</script></svg>";

/// (bytes, content type, extension) for each committed fixture.
pub fn all() -> Vec<(&'static [u8], &'static str, &'static str)> {
    vec![
        (PNG, "image/png", "png"),
        (JPEG, "image/jpeg", "jpg"),
        (WEBP, "image/webp", "webp"),
        (GIF, "image/gif", "gif"),
        (AVIF, "image/avif", "avif"),
    ]
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32_update(crc32(kind), data).to_be_bytes());
}

fn ihdr(width: u32, height: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(13);
    d.extend_from_slice(&width.to_be_bytes());
    d.extend_from_slice(&height.to_be_bytes());
    d.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    d
}

/// zlib stream (RFC 1950) of stored deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&super::util::deflate_stored(data));
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// A valid RGB PNG of `width` x `height` noise pixels (seeded), stored
/// uncompressed, so its size is about `width * height * 3` bytes.
pub fn noise_png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let row = width as usize * 3;
    let noise = big_bytes(row * height as usize, seed);
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in noise.chunks(row.max(1)).take(height as usize) {
        raw.push(0); // filter type None
        raw.extend_from_slice(line);
    }
    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr(width, height));
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A valid PNG of roughly `n_bytes` (at least a few hundred), distinct per seed.
pub fn large_png(n_bytes: usize, seed: u64) -> Vec<u8> {
    let width = 512u32;
    let height = (n_bytes / (512 * 3 + 1)).max(1) as u32;
    noise_png(width, height, seed)
}

/// A small valid PNG that differs for every seed (for many distinct images).
pub fn unique_png(seed: u64) -> Vec<u8> {
    noise_png(8, 8, seed)
}

/// A tiny PNG whose header claims `width` x `height` pixels: a decompression
/// bomb as far as a pixel cap is concerned. Its IDAT holds one row only.
pub fn png_header_with_dims(width: u32, height: u32) -> Vec<u8> {
    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr(width, height));
    chunk(&mut out, b"IDAT", &zlib_stored(&[0u8; 64]));
    chunk(&mut out, b"IEND", &[]);
    out
}
