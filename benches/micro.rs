//! Criterion micro-benchmarks for the hot pure functions (issue 6): JSON URL
//! rewriting, the no-needle fast path, hosted-path parsing, and Range/ETag
//! planning.
//!
//!   cargo bench --bench micro            measure
//!   cargo bench --bench micro -- rewrite only the rewrite group
//!
//! `cargo test --all-targets` runs each benchmark once, as a smoke test.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use permaproxy::image_format::Format;
use permaproxy::rewrite::{self, Replacement};
use permaproxy::serve::{self, Conditions};
use permaproxy::sources::SourceMatcher;
use permaproxy::store::ImageMeta;

const URLS: [&str; 4] = [
    "https://replicate.delivery/xezq/Qm1Kc2FwZ3JhcGhpY3M/out-0.webp",
    "https://replicate.delivery/xezq/Qm1Kc2FwZ3JhcGhpY3M/out-1.webp",
    "https://replicate.delivery/xezq/Qm1Kc2FwZ3JhcGhpY3M/out-2.webp",
    "https://replicate.delivery/xezq/Qm1Kc2FwZ3JhcGhpY3M/out-3.webp",
];

fn matcher() -> SourceMatcher {
    SourceMatcher::parse("replicate.delivery,*.replicate.delivery", false).unwrap()
}

/// A Replicate prediction as the Studio API relays it: 4 output URLs among
/// the usual id, input, logs, metrics and API links.
fn prediction(urls: &[&str]) -> String {
    let output: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"{{"id":"rrr4tq9cd5rj20cm3yq8j5bw3g","model":"black-forest-labs/flux-schnell","version":"f2ab8a5bfe79f02f0789a146cf5e73d2a4ff2684a98c2b303d1e1ff3814271db","input":{{"prompt":"a watercolour fox sitting in a field of lavender at dusk, soft light, high detail","num_outputs":4,"aspect_ratio":"1:1","output_format":"webp","output_quality":80,"go_fast":true,"megapixels":"1","num_inference_steps":4,"seed":1234567}},"logs":"Using seed: 1234567\nrunning quantized prediction\n100%|##########| 4/4 [00:01<00:00,  3.01it/s]\nTotal safe images: 4 out of 4\n","output":[{}],"data_removed":false,"error":null,"status":"succeeded","created_at":"2026-11-28T10:00:00.123Z","started_at":"2026-11-28T10:00:00.456Z","completed_at":"2026-11-28T10:00:02.789Z","urls":{{"cancel":"https://api.replicate.com/v1/predictions/rrr4tq9cd5rj20cm3yq8j5bw3g/cancel","get":"https://api.replicate.com/v1/predictions/rrr4tq9cd5rj20cm3yq8j5bw3g","stream":"https://stream.replicate.com/v1/files/bcwr-3ds5qk7e2f4tq"}},"metrics":{{"image_count":4,"predict_time":1.834,"total_time":2.666}}}}"#,
        output.join(",")
    )
}

/// About 2 KB of ordinary API JSON (a model list) with no source URL in it.
fn no_needle_json() -> String {
    let mut items = Vec::new();
    let mut i = 0;
    loop {
        let item = format!(
            r#"{{"id":"model-{i}","owner":"studio","name":"Image model {i}","description":"A text-to-image model, fast and cheap","visibility":"public","run_count":{}}}"#,
            1000 + i * 37
        );
        items.push(item);
        let body = format!(r#"{{"results":[{}],"next":null}}"#, items.join(","));
        if body.len() >= 2048 {
            return body;
        }
        i += 1;
    }
}

fn replacements() -> HashMap<String, Replacement> {
    URLS.iter()
        .enumerate()
        .map(|(i, u)| {
            (
                u.to_string(),
                Replacement {
                    hosted_url: format!(
                        "https://api.example.com/v1/images/hosted/user_42/img_00000000000000000000000{i}.webp"
                    ),
                    size_bytes: Some(180_000 + i as u64),
                    hosted_at: "2026-11-28T10:00:03Z".into(),
                },
            )
        })
        .collect()
}

fn bench_rewrite(c: &mut Criterion) {
    let m = matcher();
    let needles = m.needles();
    let body = prediction(&URLS);
    let plain = no_needle_json();
    let repl = replacements();
    let mut g = c.benchmark_group("rewrite");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("scan prediction, 4 URLs", |b| {
        b.iter(|| rewrite::scan(black_box(body.as_bytes()), &m).unwrap())
    });
    let scan = rewrite::scan(body.as_bytes(), &m).unwrap();
    assert_eq!(scan.found.len(), 4);
    g.bench_function("apply prediction, 4 URLs", |b| {
        b.iter(|| rewrite::apply(black_box(body.as_bytes()), &scan, &repl))
    });
    g.bench_function("scan + apply prediction, 4 URLs", |b| {
        b.iter(|| {
            let s = rewrite::scan(black_box(body.as_bytes()), &m).unwrap();
            rewrite::apply(body.as_bytes(), &s, &repl)
        })
    });
    g.throughput(Throughput::Bytes(plain.len() as u64));
    assert!(!rewrite::may_contain_sources(plain.as_bytes(), needles));
    g.bench_function("may_contain_sources, 2 KB without URLs", |b| {
        b.iter(|| rewrite::may_contain_sources(black_box(plain.as_bytes()), needles))
    });
    g.bench_function("scan, 2 KB without URLs (what the fast path skips)", |b| {
        b.iter(|| rewrite::scan(black_box(plain.as_bytes()), &m).unwrap())
    });
    g.finish();
}

fn bench_paths(c: &mut Criterion) {
    let ok = "/v1/images/hosted/user_42/img_0123456789abcdef01234567.webp";
    let bad = "/v1/images/hosted/%2e%2e/img_0123456789abcdef01234567.webp";
    let mut g = c.benchmark_group("ids");
    g.bench_function("parse_hosted_path, valid", |b| {
        b.iter(|| permaproxy::ids::parse_hosted_path(black_box(ok)).unwrap())
    });
    g.bench_function("parse_hosted_path, encoded (refused)", |b| {
        b.iter(|| permaproxy::ids::parse_hosted_path(black_box(bad)).unwrap_err())
    });
    g.finish();
}

fn meta() -> ImageMeta {
    ImageMeta {
        key: permaproxy::ids::ImageKey::new(
            permaproxy::ids::UserId::parse("user_42").unwrap(),
            permaproxy::ids::ImageId::parse("img_0123456789abcdef01234567").unwrap(),
        ),
        format: Format::Webp,
        size: 204_800,
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        source_url: Some(URLS[0].into()),
        prediction_id: Some("rrr4tq9cd5rj20cm3yq8j5bw3g".into()),
        created_at: 1_795_000_000_000,
        private: false,
        variant: None,
        vary_accept: false,
    }
}

fn bench_serve(c: &mut Criterion) {
    let m = meta();
    let etag = m.etag();
    let mut g = c.benchmark_group("serve");
    g.bench_function("parse_range bytes=1000-1999", |b| {
        b.iter(|| serve::parse_range(black_box("bytes=1000-1999"), black_box(m.size)))
    });
    g.bench_function("parse_range suffix bytes=-500", |b| {
        b.iter(|| serve::parse_range(black_box("bytes=-500"), black_box(m.size)))
    });
    let none = Conditions::default();
    g.bench_function("plan, no conditions (full 200)", |b| {
        b.iter(|| serve::plan(black_box(&m), black_box(&none)))
    });
    let inm = Conditions {
        if_none_match: Some(&etag),
        ..Default::default()
    };
    g.bench_function("plan, If-None-Match hit (304)", |b| {
        b.iter(|| serve::plan(black_box(&m), black_box(&inm)))
    });
    let ranged = Conditions {
        range: Some("bytes=0-65535"),
        if_range: Some(&etag),
        ..Default::default()
    };
    g.bench_function("plan, Range + If-Range (206)", |b| {
        b.iter(|| serve::plan(black_box(&m), black_box(&ranged)))
    });
    let full = serve::plan(&m, &none);
    g.bench_function("headers, full 200", |b| {
        b.iter(|| serve::headers(black_box(&m), black_box(&full)))
    });
    g.finish();
}

criterion_group!(benches, bench_rewrite, bench_paths, bench_serve);
criterion_main!(benches);
