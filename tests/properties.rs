//! Property tests of the JSON rewrite (issue 11, "Hardening").
//!
//! A fuzzer found that user text such as `"httpé…"` beside a real source
//! panicked the rewrite. These properties make that kind of defect hard to
//! write again: for arbitrary documents full of hostile strings (see
//! `common/hostile_json.rs`) beside real sources, `scan` + `apply` must give
//! valid JSON in which only the sources changed, each into the replacement
//! passed in, `url` members gained the documented siblings, and every other
//! byte (numbers as spelled, order, white space, escapes) is unchanged.
//!
//! The parsers' properties (never panic on arbitrary input) live next to
//! them: `src/sources.rs`, `src/ids.rs`, `src/serve.rs`.
//!
//! Run alone: `cargo test --test properties`. Failures are saved under
//! `tests/proptest-regressions/` and replayed first on the next run.

#[path = "common/hostile_json.rs"]
mod hostile_json;

use std::collections::HashMap;

use hostile_json::{ByteEntropy, Doc, Kind, Limits, Seg, Swap, REPLICATE_HOSTS, REPLICATE_SOURCES};
use permaproxy::rewrite::{apply, scan, Replacement};
use permaproxy::sources::{Source, SourceMatcher};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn matcher() -> SourceMatcher {
    SourceMatcher::parse(REPLICATE_HOSTS, false).expect("hosts")
}

fn kind(m: &SourceMatcher, s: &str) -> Option<Kind> {
    m.classify(s).map(|src| match src {
        Source::Url(_) => Kind::Url,
        Source::Data => Kind::Data,
    })
}

fn lossy(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 3000 {
        format!("{}… ({} bytes)", &s[..s.floor_char_boundary(3000)], s.len())
    } else {
        s.to_string()
    }
}

/// Replacements for the document's sources: bit pairs of `missing` drop
/// some (a download that failed keeps the original), bits of `pending` make
/// `size_bytes` null, and `odd_base` puts characters that need escaping in
/// the hosted URL.
fn replacements(
    doc: &Doc,
    missing: u64,
    pending: u64,
    odd_base: bool,
) -> HashMap<String, Replacement> {
    let base = if odd_base {
        "https://api.example.com/é\"\\/"
    } else {
        "https://api.example.com"
    };
    doc.sources
        .iter()
        .enumerate()
        .filter(|(i, _)| (missing >> ((2 * i) % 64)) & 3 != 0)
        .map(|(i, (value, _))| {
            (
                value.clone(),
                Replacement {
                    hosted_url: format!("{base}/v1/images/hosted/u/img_{i:024x}.png"),
                    size_bytes: ((pending >> (i % 64)) & 1 == 0).then_some(1000 + i as u64),
                    hosted_at: "2026-11-28T10:00:00Z".to_string(),
                },
            )
        })
        .collect()
}

/// The whole property for one choice stream.
fn check(choices: &[u8], missing: u64, pending: u64, odd_base: bool) -> Result<(), TestCaseError> {
    let m = matcher();
    let real: Vec<String> = REPLICATE_SOURCES.iter().map(|s| s.to_string()).collect();
    let is_source = |s: &str| kind(&m, s);
    let doc = Doc::generate(
        &mut ByteEntropy::new(choices),
        &real,
        &is_source,
        Limits::PURE,
    );
    let body = doc.to_bytes();
    let found =
        scan(&body, &m).map_err(|e| TestCaseError::fail(format!("{e}: {}", lossy(&body))))?;

    // The scanner finds exactly the sources, in order, and the prediction id.
    let got: Vec<&str> = found.found.iter().map(|f| f.value.as_str()).collect();
    let want: Vec<&str> = doc
        .segs
        .iter()
        .filter_map(|s| match s {
            Seg::Src { source, .. } => Some(doc.sources[*source].0.as_str()),
            Seg::Lit(_) => None,
        })
        .collect();
    prop_assert_eq!(&got, &want, "sources found in {}", lossy(&body));
    prop_assert_eq!(
        &found.prediction_id,
        &doc.prediction_id,
        "prediction id of {}",
        lossy(&body)
    );

    let repl = replacements(&doc, missing, pending, odd_base);
    let out = apply(&body, &found, &repl);
    let swap = |v: &str| {
        repl.get(v).map(|r| Swap {
            hosted_url: r.hosted_url.clone(),
            size_bytes: r.size_bytes,
            hosted_at: Some(r.hosted_at.clone()),
        })
    };
    doc.check_rewrite(&out, &swap).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\n input: {}\noutput: {}",
            lossy(&body),
            lossy(&out)
        ))
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        // Integration tests have no lib.rs beside them, so name the file.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Hostile documents beside real sources: only the sources change.
    #[test]
    fn rewrite_changes_only_sources(
        choices in prop::collection::vec(any::<u8>(), 0..2048),
        missing in any::<u64>(),
        pending in any::<u64>(),
        odd_base in any::<bool>(),
    ) {
        check(&choices, missing, pending, odd_base)?;
    }

    /// Arbitrary bytes: the scanner never panics, and whatever it finds in
    /// a body it accepts, `apply` keeps every byte outside those spans.
    #[test]
    fn scan_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        prefix in prop::sample::select(vec![
            "", "[\"http", "{\"url\":\"https://replicate.delivery/", "[\"data:image/png;base64,",
            "{\"a\":\"\\ud800\",\"b\":\"https://replicate.delivery/x\\u00e9", "\"",
        ]),
    ) {
        let mut body = prefix.as_bytes().to_vec();
        body.extend_from_slice(&bytes);
        let m = matcher();
        if let Ok(found) = scan(&body, &m) {
            let repl: HashMap<String, Replacement> = found
                .found
                .iter()
                .map(|f| (f.value.clone(), Replacement {
                    hosted_url: "https://h/x.png".into(),
                    size_bytes: None,
                    hosted_at: "2026-11-28T10:00:00Z".into(),
                }))
                .collect();
            let out = apply(&body, &found, &repl);
            serde_json::from_slice::<serde::de::IgnoredAny>(&out)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", lossy(&out))))?;
            let mut at = 0;
            for f in &found.found {
                prop_assert!(f.start >= at && f.end <= body.len());
                at = f.end;
            }
            let kept: usize = body.len() - found.found.iter().map(|f| f.end - f.start).sum::<usize>();
            prop_assert!(out.len() >= kept);
        }
    }
}

/// The hostile strings named in issue 11, each beside a source, as fixed
/// cases that run whatever proptest draws.
#[test]
fn named_hostile_strings_beside_a_source() {
    let m = matcher();
    let a = REPLICATE_SOURCES[0];
    for text in [
        r#""httpé and more text""#,
        r#""https://""#,
        r#""data:""#,
        r#""data:image/png;base64""#,
        r#""data:text/html;base64,PHNjcmlwdD4=""#,
        r#""https:\/\/replicate.delivery\/ x""#,
        r#""\u00e9\"\\\/\b\f\n\r\t\u0000\u001f""#,
        r#""http\ud800 lone surrogate""#,
        r#""data:\udc00""#,
        r#""dataé:xxxxxxxxx""#,
        r#""ééééééééé""#,
    ] {
        let body = format!(r#"{{"prompt":{text},"n":1.50,"url":"{a}","x":[{text}]}}"#);
        let found = scan(body.as_bytes(), &m).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(found.found.len(), 1, "{body}");
        let mut repl = HashMap::new();
        repl.insert(
            a.to_string(),
            Replacement {
                hosted_url: "https://api.example.com/v1/images/hosted/u/img_0.png".into(),
                size_bytes: Some(7),
                hosted_at: "2026-11-28T10:00:00Z".into(),
            },
        );
        let out = String::from_utf8(apply(body.as_bytes(), &found, &repl)).expect("UTF-8");
        assert_eq!(
            out,
            format!(
                r#"{{"prompt":{text},"n":1.50,"url":"https://api.example.com/v1/images/hosted/u/img_0.png","replicate_url":"{a}","size_bytes":7,"hosted_at":"2026-11-28T10:00:00Z","x":[{text}]}}"#
            )
        );
    }
}
