//! `parse_hosted_path` on arbitrary paths: it never panics, and whatever it
//! accepts is a safe storage key that prints back to the same path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use permaproxy::ids::{parse_hosted_path, HOSTED_PREFIX};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    for path in [raw.to_string(), format!("{HOSTED_PREFIX}{raw}")] {
        let Ok((key, format)) = parse_hosted_path(&path) else {
            continue;
        };
        let user = key.user.as_str();
        assert!(!user.is_empty() && user.len() <= 128 && user != "." && user != "..");
        assert!(user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
        let id = key.id.as_str();
        assert!(id.len() == 28 && id.starts_with("img_"));
        assert!(id[4..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let printed = key.hosted_path(format);
        assert_eq!(parse_hosted_path(&printed).ok(), Some((key.clone(), format)));
        let rel = key.relative_path(format);
        assert_eq!(rel.matches('/').count(), 1, "{rel}");
    }
});
