//! `SourceMatcher::classify` on arbitrary strings, alone and after prefixes
//! that make it take its deeper paths: it never panics, and what it calls a
//! source obeys the host and scheme policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permaproxy::sources::{Source, SourceMatcher};

const PREFIXES: &[&str] = &[
    "",
    "http",
    "https://",
    "http://",
    "data:",
    "data:image/png;base64,",
    "https://replicate.delivery/",
    "https://x.replicate.delivery",
    "http://127.0.0.1:9999/",
    "DATA:",
];

fuzz_target!(|data: &[u8]| {
    let matchers = [
        SourceMatcher::parse("replicate.delivery,*.replicate.delivery", false).expect("hosts"),
        SourceMatcher::parse("127.0.0.1:9999,[::1]:8443,*.example.com", true).expect("hosts"),
    ];
    let (pick, rest) = match data.split_first() {
        Some((p, r)) => (*p as usize % PREFIXES.len(), r),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(rest);
    let s = format!("{}{text}", PREFIXES[pick]);
    for m in &matchers {
        match m.classify(&s) {
            Some(Source::Url(u)) => {
                assert!(m.url_allowed(&u), "{s:?}");
                assert!(matches!(u.scheme(), "https" | "http"));
                assert!(s.len() <= 2048 && !s.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20));
            }
            Some(Source::Data) => {
                assert!(s.as_bytes()[..5].eq_ignore_ascii_case(b"data:") && s.contains(','));
            }
            None => {}
        }
    }
});
