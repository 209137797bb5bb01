//! `scan` + `apply` on hostile JSON documents (structured: the input drives
//! `tests/common/hostile_json.rs`, which mixes hostile user text with real
//! sources and knows the exact correct output), and on raw bytes.
#![no_main]

#[path = "../../tests/common/hostile_json.rs"]
mod hostile_json;

use std::collections::HashMap;

use hostile_json::{ByteEntropy, Doc, Kind, Limits, Swap, REPLICATE_HOSTS, REPLICATE_SOURCES};
use libfuzzer_sys::fuzz_target;
use permaproxy::rewrite::{apply, scan, Replacement};
use permaproxy::sources::{Source, SourceMatcher};

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn replacement(i: usize, pending: bool) -> Replacement {
    Replacement {
        hosted_url: format!("https://api.example.com/v1/images/hosted/u/img_{i:024x}.png"),
        size_bytes: (!pending).then_some(1000 + i as u64),
        hosted_at: "2026-11-28T10:00:00Z".to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let m = SourceMatcher::parse(REPLICATE_HOSTS, false).expect("hosts");
    let (mode, missing, pending) = (
        data.first().copied().unwrap_or(0),
        u64_at(data, 1),
        u64_at(data, 9),
    );
    let rest = data.get(17..).unwrap_or(&[]);
    if mode < 224 {
        let real: Vec<String> = REPLICATE_SOURCES.iter().map(|s| s.to_string()).collect();
        let is_source = |s: &str| {
            m.classify(s).map(|src| match src {
                Source::Url(_) => Kind::Url,
                Source::Data => Kind::Data,
            })
        };
        let doc = Doc::generate(&mut ByteEntropy::new(rest), &real, &is_source, Limits::PURE);
        let body = doc.to_bytes();
        let found = scan(&body, &m).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&body));
        });
        let repl: HashMap<String, Replacement> = doc
            .sources
            .iter()
            .enumerate()
            .filter(|(i, _)| (missing >> ((2 * i) % 64)) & 3 != 0)
            .map(|(i, (v, _))| (v.clone(), replacement(i, (pending >> (i % 64)) & 1 == 1)))
            .collect();
        let out = apply(&body, &found, &repl);
        let swap = |v: &str| {
            repl.get(v).map(|r| Swap {
                hosted_url: r.hosted_url.clone(),
                size_bytes: r.size_bytes,
                hosted_at: Some(r.hosted_at.clone()),
            })
        };
        if let Err(e) = doc.check_rewrite(&out, &swap) {
            panic!(
                "{e}\n input: {}\noutput: {}",
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&out)
            );
        }
        assert_eq!(found.prediction_id, doc.prediction_id);
    } else {
        // Raw bytes: no panic; with no replacement the body comes back as it
        // was; with replacements it is still JSON and every byte outside the
        // found spans is in place.
        let Ok(found) = scan(rest, &m) else { return };
        assert_eq!(apply(rest, &found, &HashMap::new()), rest);
        let repl: HashMap<String, Replacement> = found
            .found
            .iter()
            .enumerate()
            .map(|(i, f)| (f.value.clone(), replacement(i, false)))
            .collect();
        let out = apply(rest, &found, &repl);
        serde_json::from_slice::<serde::de::IgnoredAny>(&out).expect("valid JSON out");
        let (mut at, mut pos) = (0, 0);
        let eat = |pos: &mut usize, want: &[u8]| -> bool {
            let ok = out[*pos..].starts_with(want);
            if ok {
                *pos += want.len();
            }
            ok
        };
        for f in &found.found {
            assert!(f.start >= at && f.start < f.end && f.end <= rest.len());
            assert!(eat(&mut pos, &rest[at..f.start]), "bytes before a span");
            let r = &repl[&f.value];
            assert!(eat(&mut pos, serde_json::to_string(&r.hosted_url).unwrap().as_bytes()));
            if f.url_member {
                let value = serde_json::to_string(&f.value).unwrap();
                eat(&mut pos, format!(",\"replicate_url\":{value}").as_bytes());
                eat(&mut pos, format!(",\"size_bytes\":{}", r.size_bytes.unwrap()).as_bytes());
                eat(&mut pos, br#","hosted_at":"2026-11-28T10:00:00Z""#);
            }
            at = f.end;
        }
        assert!(eat(&mut pos, &rest[at..]), "bytes after the last span");
        assert_eq!(pos, out.len());
    }
});
