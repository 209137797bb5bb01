//! `/metrics` on the admin listener: every documented name is there from the
//! first scrape, and scrapes before and after traffic show the counters move.

use crate::common::metrics::metric_value;
use crate::common::*;
use crate::{assert_ok_bytes, dead_upstream, get, metric_reaches, stands, store_png};

const ROUTES: [&str; 3] = ["hosted", "rewrite", "passthrough"];
const TIERS: [&str; 4] = ["memory", "disk", "pending", "miss"];
const OUTCOMES: [&str; 4] = ["ok", "retry", "failed", "rejected"];

/// The names issue 4 (and README) promise, without histogram suffixes.
const COUNTERS_AND_GAUGES: [&str; 13] = [
    "permaproxy_http_requests_total",
    "permaproxy_hosted_requests_total",
    "permaproxy_hosted_bytes_sent_total",
    "permaproxy_downloads_total",
    "permaproxy_downloaded_bytes_total",
    "permaproxy_pending_downloads",
    "permaproxy_stored_images",
    "permaproxy_stored_bytes",
    "permaproxy_memory_cache_bytes",
    "permaproxy_memory_cache_entries",
    "permaproxy_rate_limited_total",
    "permaproxy_upstream_errors_total",
    // Not in the issue's list, but the dashboard reads it.
    "permaproxy_storage_free_bytes",
];
const HISTOGRAMS: [&str; 2] = [
    "permaproxy_http_request_duration_seconds",
    "permaproxy_download_duration_seconds",
];

/// Value of `query` in a scrape; 0 when absent.
fn val(text: &str, query: &str) -> f64 {
    metric_value(text, query).unwrap_or(0.0)
}

#[track_caller]
fn assert_present(text: &str, query: &str) {
    assert!(
        metric_value(text, query).is_some(),
        "{query} missing from /metrics:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exposed_before_any_traffic() {
    let s = stands(&[]).await;
    let text = s.proxy.metrics().await;
    for name in COUNTERS_AND_GAUGES {
        assert_present(&text, name);
    }
    for name in HISTOGRAMS {
        assert!(
            text.contains(&format!("# TYPE {name} histogram")),
            "{name} is not a histogram:\n{text}"
        );
        for suffix in ["_bucket", "_sum", "_count"] {
            assert_present(&text, &format!("{name}{suffix}"));
        }
    }
    // Every label value a dashboard or alert selects on exists from the
    // start, so rate() and absent() behave before the first event.
    for route in ROUTES {
        for class in ["2xx", "3xx", "4xx", "5xx"] {
            assert_present(
                &text,
                &format!(r#"permaproxy_http_requests_total{{route="{route}",status="{class}"}}"#),
            );
        }
        assert_present(
            &text,
            &format!(r#"permaproxy_http_request_duration_seconds_count{{route="{route}"}}"#),
        );
        assert_present(
            &text,
            &format!(
                r#"permaproxy_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}}"#
            ),
        );
    }
    for tier in TIERS {
        assert_present(
            &text,
            &format!(r#"permaproxy_hosted_requests_total{{tier="{tier}"}}"#),
        );
    }
    for outcome in OUTCOMES {
        assert_present(
            &text,
            &format!(r#"permaproxy_downloads_total{{outcome="{outcome}"}}"#),
        );
    }
    // Nothing happened yet: the traffic counters are all zero, apart from
    // the harness's own readiness probe on the public health route.
    let all = val(&text, "permaproxy_http_requests_total");
    let health = val(&text, r#"permaproxy_http_requests_total{route="health"}"#);
    assert_eq!(all - health, 0.0, "requests other than health probes");
    for name in [
        "permaproxy_hosted_requests_total",
        "permaproxy_downloads_total",
        "permaproxy_rate_limited_total",
        "permaproxy_upstream_errors_total",
        "permaproxy_stored_images",
    ] {
        assert_eq!(val(&text, name), 0.0, "{name} before any traffic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_before_and_after_traffic_show_counters_move() {
    let s = stands(&[]).await;
    let img = fixtures::large_png(40_000, 21);
    let len = img.len() as f64;
    let before = s.proxy.metrics().await;

    // rewrite: one generate storing one image (downloaded once).
    let h = store_png(&s, "/pbxt/mx/out-0.png", &img).await;
    // hosted: first from disk, then from memory; then an unknown image.
    assert_ok_bytes(&get(&s.proxy, &h.path, &[]).await, &img, "first GET");
    assert_ok_bytes(&get(&s.proxy, &h.path, &[]).await, &img, "second GET");
    let missing = "/v1/images/hosted/anonymous/img_000000000000000000000000.png";
    assert_eq!(get(&s.proxy, missing, &[]).await.status, 404);
    // passthrough: two answers, 200 and 503.
    assert_eq!(get(&s.proxy, "/echo/m", &[]).await.status, 200);
    assert_eq!(get(&s.proxy, "/echo/m?status=503", &[]).await.status, 503);

    let q = |route: &str, class: &str| {
        format!(r#"permaproxy_http_requests_total{{route="{route}",status="{class}"}}"#)
    };
    // The request counters move in the access-log hook, just after the
    // answer is out: wait for the last of them.
    assert!(metric_reaches(&s.proxy, &q("passthrough", "5xx"), 1.0).await);
    assert!(metric_reaches(&s.proxy, &q("hosted", "4xx"), 1.0).await);
    let after = s.proxy.metrics().await;
    let delta = |query: &str| val(&after, query) - val(&before, query);

    assert_eq!(delta(&q("rewrite", "2xx")), 1.0, "rewrite 2xx");
    assert_eq!(delta(&q("hosted", "2xx")), 2.0, "hosted 2xx");
    assert_eq!(delta(&q("hosted", "4xx")), 1.0, "hosted 4xx");
    assert_eq!(delta(&q("passthrough", "2xx")), 1.0, "passthrough 2xx");
    assert_eq!(delta(&q("passthrough", "5xx")), 1.0, "passthrough 5xx");

    let tier = |t: &str| format!(r#"permaproxy_hosted_requests_total{{tier="{t}"}}"#);
    assert_eq!(delta(&tier("disk")), 1.0, "first GET from disk");
    assert_eq!(delta(&tier("memory")), 1.0, "second GET from memory");
    assert_eq!(delta(&tier("miss")), 1.0, "unknown image");
    assert_eq!(delta("permaproxy_hosted_bytes_sent_total"), 2.0 * len);

    assert_eq!(
        delta(r#"permaproxy_downloads_total{outcome="ok"}"#),
        1.0,
        "one download"
    );
    assert_eq!(
        delta(r#"permaproxy_downloads_total{outcome="failed"}"#),
        0.0
    );
    assert_eq!(delta("permaproxy_downloaded_bytes_total"), len);
    assert_eq!(delta("permaproxy_download_duration_seconds_count"), 1.0);
    assert_eq!(
        delta(r#"permaproxy_download_duration_seconds_bucket{le="+Inf"}"#),
        1.0
    );
    assert_eq!(val(&after, "permaproxy_stored_images"), 1.0);
    assert_eq!(val(&after, "permaproxy_stored_bytes"), len);
    assert_eq!(val(&after, "permaproxy_pending_downloads"), 0.0);
    assert_eq!(val(&after, "permaproxy_memory_cache_entries"), 1.0);
    assert!(
        val(&after, "permaproxy_memory_cache_bytes") >= len,
        "memory cache holds the image: {}",
        val(&after, "permaproxy_memory_cache_bytes")
    );

    for route in ROUTES {
        let count = format!(r#"permaproxy_http_request_duration_seconds_count{{route="{route}"}}"#);
        let inf = format!(
            r#"permaproxy_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}}"#
        );
        let want = match route {
            "hosted" => 3.0,
            "passthrough" => 2.0,
            _ => 1.0,
        };
        assert_eq!(delta(&count), want, "{count}");
        assert_eq!(delta(&inf), want, "{inf}");
        assert!(
            delta(&format!(
                r#"permaproxy_http_request_duration_seconds_sum{{route="{route}"}}"#
            )) > 0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_memory_cache_every_hit_is_from_disk() {
    let s = stands(&[("IMAGE_MEMORY_CACHE_MB", "0")]).await;
    let h = store_png(&s, "/pbxt/nomem/out-0.png", fixtures::PNG).await;
    let before = s.proxy.metrics().await;
    for i in 0..3 {
        let r = get(&s.proxy, &h.path, &[]).await;
        assert_ok_bytes(&r, fixtures::PNG, &format!("GET {i}"));
    }
    assert!(
        metric_reaches(
            &s.proxy,
            r#"permaproxy_http_requests_total{route="hosted",status="2xx"}"#,
            3.0
        )
        .await
    );
    let after = s.proxy.metrics().await;
    let delta = |query: &str| val(&after, query) - val(&before, query);
    assert_eq!(
        delta(r#"permaproxy_hosted_requests_total{tier="disk"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"permaproxy_hosted_requests_total{tier="memory"}"#),
        0.0
    );
    assert_eq!(
        delta("permaproxy_hosted_bytes_sent_total"),
        3.0 * fixtures::PNG.len() as f64
    );
    assert_eq!(val(&after, "permaproxy_memory_cache_entries"), 0.0);
    assert_eq!(val(&after, "permaproxy_memory_cache_bytes"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_counts_upstream_errors() {
    let proxy = Proxy::start(ProxyOptions::new(&dead_upstream())).await;
    let before = proxy.metrics().await;
    let r = get(&proxy, "/v1/anything", &[]).await;
    assert_eq!(r.status, 502, "pass-through to a dead upstream");
    let r = fetch(
        client()
            .post(proxy.url(crate::GEN))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 502, "rewrite route to a dead upstream");
    assert_eq!(r.json()["code"].as_str().map(str::is_empty), Some(false));
    for route in ["passthrough", "rewrite"] {
        let q = format!(r#"permaproxy_http_requests_total{{route="{route}",status="5xx"}}"#);
        assert!(metric_reaches(&proxy, &q, 1.0).await, "{q}");
    }
    let after = proxy.metrics().await;
    let delta = |query: &str| val(&after, query) - val(&before, query);
    assert_eq!(delta("permaproxy_upstream_errors_total"), 2.0);
    assert_eq!(
        delta(r#"permaproxy_http_requests_total{route="passthrough",status="5xx"}"#),
        1.0
    );
}
