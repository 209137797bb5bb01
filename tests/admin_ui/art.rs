//! Pleasant test images: soft gradients with a few discs, as real PNGs
//! (so the screenshots in README look like a gallery, not like noise).

use std::io::Write;

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    match (i as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// A `size` x `size` RGB PNG, different for every seed.
pub fn png(seed: u64, size: u32) -> Vec<u8> {
    let hue = (seed as f64 * 0.137).fract();
    let a = hsv(hue, 0.55, 0.95);
    let b = hsv((hue + 0.18).fract(), 0.75, 0.55);
    let discs: Vec<(f64, f64, f64, [f64; 3])> = (0..3)
        .map(|k| {
            let r = ((seed * 7 + k * 13) % 17) as f64 / 17.0;
            (
                0.2 + 0.6 * ((seed * 5 + k * 11) % 9) as f64 / 9.0,
                0.2 + 0.6 * ((seed * 3 + k * 7) % 11) as f64 / 11.0,
                0.12 + 0.18 * r,
                hsv((hue + 0.45 + 0.1 * k as f64).fract(), 0.6, 1.0),
            )
        })
        .collect();
    let n = size as f64;
    let mut raw = Vec::with_capacity((size as usize * 3 + 1) * size as usize);
    for y in 0..size {
        raw.push(0);
        for x in 0..size {
            let (fx, fy) = (x as f64 / n, y as f64 / n);
            let t = (fx + fy) / 2.0;
            let mut c: [f64; 3] = std::array::from_fn(|i| a[i] * (1.0 - t) + b[i] * t);
            for (cx, cy, r, col) in &discs {
                let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
                let alpha = (1.0 - ((d - r) / 0.015).clamp(0.0, 1.0)) * 0.85;
                for i in 0..3 {
                    c[i] = c[i] * (1.0 - alpha) + col[i] * alpha;
                }
            }
            raw.extend(
                c.iter()
                    .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
            );
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).expect("compress");
    let idat = z.finish().expect("compress");
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&size.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}
