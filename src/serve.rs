//! Hosted-image response planning: conditional requests, ranges and the
//! headers that let clients and CDNs cache an image forever. Pure functions;
//! the Pingora glue writes what they decide.

use crate::store::{ByteRange, ImageMeta};

pub const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The request headers that matter for serving.
#[derive(Debug, Default, Clone)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    NotModified,
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Decides the response, following RFC 9110: If-None-Match wins over
/// If-Modified-Since; a Range applies only when If-Range (if any) matches.
pub fn plan(meta: &ImageMeta, c: &Conditions) -> Plan {
    let etag = meta.etag();
    if let Some(inm) = c.if_none_match {
        if etag_matches(inm, &etag) {
            return Plan::NotModified;
        }
    } else if let Some(ims) = c.if_modified_since {
        if let Ok(since) = httpdate::parse_http_date(ims) {
            if last_modified_secs(meta) <= secs(since) {
                return Plan::NotModified;
            }
        }
    }
    let Some(range) = c.range else {
        return Plan::Full;
    };
    if let Some(ir) = c.if_range {
        if ir.trim() != etag {
            return Plan::Full;
        }
    }
    match parse_range(range, meta.size) {
        RangeResult::Ignore => Plan::Full,
        RangeResult::Unsatisfiable => Plan::Unsatisfiable,
        RangeResult::Range(r) => Plan::Partial(r),
    }
}

/// Weak comparison, as If-None-Match requires; `*` matches any image.
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn last_modified_secs(meta: &ImageMeta) -> u64 {
    meta.created_at / 1000
}

pub fn last_modified(meta: &ImageMeta) -> String {
    httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(last_modified_secs(meta)),
    )
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeResult {
    /// Malformed, multi-range or not in bytes: serve the whole image.
    Ignore,
    Unsatisfiable,
    Range(ByteRange),
}

/// Parses one `bytes=` range. Multiple ranges are answered with the whole
/// image, which RFC 9110 allows and which no image client needs otherwise.
pub fn parse_range(header: &str, size: u64) -> RangeResult {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeResult::Ignore;
    };
    if spec.contains(',') {
        return RangeResult::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeResult::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeResult::Ignore,
        (true, false) => match b.parse::<u64>() {
            Ok(0) => return RangeResult::Unsatisfiable,
            Ok(n) if size == 0 => {
                return if n > 0 {
                    RangeResult::Unsatisfiable
                } else {
                    RangeResult::Ignore
                }
            }
            Ok(n) => (size.saturating_sub(n), size - 1),
            Err(_) => return RangeResult::Ignore,
        },
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeResult::Ignore;
            };
            let end = match b {
                "" => u64::MAX,
                _ => match b.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    _ => return RangeResult::Ignore,
                },
            };
            if start >= size {
                return RangeResult::Unsatisfiable;
            }
            (start, end.min(size - 1))
        }
    };
    RangeResult::Range(ByteRange {
        start: parsed.0,
        end: parsed.1,
    })
}

/// Headers for a 200, 206 or 304 answer.
pub fn headers(meta: &ImageMeta, plan: &Plan) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("etag", meta.etag()),
        ("last-modified", last_modified(meta)),
        ("cache-control", CACHE_CONTROL.to_string()),
        ("accept-ranges", "bytes".to_string()),
        ("x-content-type-options", "nosniff".to_string()),
    ];
    // `format=auto` variants: caches must key on Accept (a 304 carries it
    // too, as the 200 would).
    if meta.vary_accept {
        h.push(("vary", "Accept".to_string()));
    }
    match plan {
        Plan::NotModified => {}
        Plan::Full => {
            h.push(("content-type", meta.content_type().to_string()));
            h.push(("content-length", meta.size.to_string()));
        }
        Plan::Partial(r) => {
            h.push(("content-type", meta.content_type().to_string()));
            h.push(("content-length", r.len().to_string()));
            h.push((
                "content-range",
                format!("bytes {}-{}/{}", r.start, r.end, meta.size),
            ));
        }
        Plan::Unsatisfiable => {}
    }
    h
}

pub fn status(plan: &Plan) -> u16 {
    match plan {
        Plan::NotModified => 304,
        Plan::Full => 200,
        Plan::Partial(_) => 206,
        Plan::Unsatisfiable => 416,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_format::Format;

    fn meta(size: u64) -> ImageMeta {
        ImageMeta {
            key: crate::ids::ImageKey::new(
                crate::ids::UserId::parse("u").unwrap(),
                crate::ids::ImageId::parse("img_000000000000000000000000").unwrap(),
            ),
            format: Format::Png,
            size,
            sha256: "ab".repeat(32),
            source_url: None,
            prediction_id: None,
            created_at: 1_700_000_000_000,
            private: false,
            variant: None,
            vary_accept: false,
        }
    }

    fn r(start: u64, end: u64) -> RangeResult {
        RangeResult::Range(ByteRange { start, end })
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), r(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), r(90, 99));
        assert_eq!(parse_range("bytes=90-1000", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-5", 100), r(95, 99));
        assert_eq!(parse_range("bytes=-500", 100), r(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeResult::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeResult::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeResult::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeResult::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeResult::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeResult::Ignore);
        assert_eq!(parse_range("bytes=-", 100), RangeResult::Ignore);
    }

    #[test]
    fn conditionals() {
        let m = meta(100);
        let etag = m.etag();
        let c = Conditions {
            if_none_match: Some(&etag),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::NotModified);
        let weak = format!("W/{etag}, \"other\"");
        let c = Conditions {
            if_none_match: Some(&weak),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::NotModified);
        let c = Conditions {
            if_none_match: Some("\"nope\""),
            if_modified_since: Some("Sun, 06 Nov 2050 08:49:37 GMT"),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::Full, "If-None-Match wins");
        let c = Conditions {
            if_modified_since: Some("Sun, 06 Nov 2050 08:49:37 GMT"),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::NotModified);
    }

    #[test]
    fn if_range() {
        let m = meta(100);
        let c = Conditions {
            range: Some("bytes=0-1"),
            if_range: Some("\"stale\""),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::Full);
        let etag = m.etag();
        let c = Conditions {
            range: Some("bytes=0-1"),
            if_range: Some(&etag),
            ..Default::default()
        };
        assert_eq!(plan(&m, &c), Plan::Partial(ByteRange { start: 0, end: 1 }));
    }

    // Issue 11: Range and the conditional headers come straight from
    // clients; planning must never panic, and a 206 must lie inside the image.
    mod never_panics {
        use super::*;
        use proptest::prelude::*;

        fn size() -> impl Strategy<Value = u64> {
            prop_oneof![0u64..16, 0u64..100_000, any::<u64>()]
        }

        fn header() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "bytes=[0-9 ,+-]{0,24}",
                "[a-zA-Z]{0,6}=?[0-9 ,+-]{0,12}",
                prop::collection::vec(any::<u8>(), 0..40)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parse_range_stays_inside(h in header(), size in size()) {
                for h in [h.clone(), format!("bytes={h}")] {
                    if let RangeResult::Range(r) = parse_range(&h, size) {
                        prop_assert!(r.start <= r.end && r.end < size, "{:?} {}: {:?}", h, size, r);
                    }
                }
            }

            #[test]
            fn plan_on_arbitrary_headers(
                inm in prop::option::of(header()),
                ims in prop::option::of(header()),
                range in prop::option::of(header()),
                if_range in prop::option::of(header()),
                size in size(),
                use_etag in any::<bool>(),
            ) {
                let m = meta(size);
                let etag = m.etag();
                let c = Conditions {
                    if_none_match: inm.as_deref(),
                    if_modified_since: ims.as_deref(),
                    range: range.as_deref(),
                    if_range: if use_etag { Some(etag.as_str()) } else { if_range.as_deref() },
                };
                let p = plan(&m, &c);
                if let Plan::Partial(r) = p {
                    prop_assert!(r.start <= r.end && r.end < size);
                    let want = format!("bytes {}-{}/{}", r.start, r.end, size);
                    prop_assert!(headers(&m, &p).contains(&("content-range", want)));
                }
                let _ = status(&p);
            }
        }
    }

    #[test]
    fn partial_headers() {
        let m = meta(100);
        let h = headers(&m, &Plan::Partial(ByteRange { start: 10, end: 19 }));
        assert!(h.contains(&("content-range", "bytes 10-19/100".into())));
        assert!(h.contains(&("content-length", "10".into())));
        assert!(h.contains(&("cache-control", CACHE_CONTROL.into())));
    }
}
