//! `parse_range` and `serve::plan` on arbitrary header values and sizes:
//! they never panic, and every 206 they plan lies inside the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permaproxy::image_format::Format;
use permaproxy::serve::{self, Conditions, Plan, RangeResult};
use permaproxy::store::ImageMeta;

fuzz_target!(|data: &[u8]| {
    let mut size_bytes = [0u8; 8];
    for (i, b) in size_bytes.iter_mut().enumerate() {
        *b = data.get(i).copied().unwrap_or(0);
    }
    // Mostly small sizes, where off-by-one errors live; sometimes any u64.
    let size = match data.get(8) {
        Some(b) if b & 1 == 0 => u64::from_le_bytes(size_bytes) % 4096,
        _ => u64::from_le_bytes(size_bytes),
    };
    let text = String::from_utf8_lossy(data.get(9..).unwrap_or(&[]));
    let header = text.to_string();
    let with_unit = format!("bytes={header}");
    for h in [&header, &with_unit] {
        if let RangeResult::Range(r) = serve::parse_range(h, size) {
            assert!(r.start <= r.end && r.end < size, "{h:?} size {size}: {r:?}");
        }
    }

    // The same text split into If-None-Match, If-Modified-Since, Range and
    // If-Range, the way a client could send them.
    let mut parts = text.split('\u{1f}');
    let meta = ImageMeta {
        id: "img_000000000000000000000000".into(),
        user_id: "u".into(),
        format: Format::Png,
        content_type: "image/png".into(),
        size,
        sha256: "ab".repeat(32),
        source_url: None,
        prediction_id: None,
        created_at: 1_700_000_000_000,
    };
    let etag = meta.etag();
    let c = Conditions {
        if_none_match: parts.next(),
        if_modified_since: parts.next(),
        range: parts.next().map(|r| if r.starts_with('=') { with_unit.as_str() } else { r }),
        if_range: parts.next().map(|r| if r.is_empty() { etag.as_str() } else { r }),
    };
    let plan = serve::plan(&meta, &c);
    if let Plan::Partial(r) = plan {
        assert!(r.start <= r.end && r.end < size);
        let headers = serve::headers(&meta, &plan);
        let want = format!("bytes {}-{}/{size}", r.start, r.end);
        assert!(headers.contains(&("content-range", want)));
    }
    let _ = serve::status(&plan);
});
