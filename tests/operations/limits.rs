//! The per-client token bucket on hosted images: burst, 429, refill; what it
//! does not touch (pass-through); and which address names the client.

use crate::common::*;
use crate::{assert_ok_bytes, get, get_until_ok, metric_reaches, stands, store_png};

const RATE_2_BURST_5: &[(&str, &str)] = &[
    ("IMAGE_DOWNLOAD_RATE_PER_SEC", "2"),
    ("IMAGE_DOWNLOAD_BURST", "5"),
];

/// One token per 20 s: tests about *who* is limited must not see a refill
/// on a loaded machine, whatever the requests' pace.
const SLOW_REFILL_BURST_5: &[(&str, &str)] = &[
    ("IMAGE_DOWNLOAD_RATE_PER_SEC", "0.05"),
    ("IMAGE_DOWNLOAD_BURST", "5"),
];

/// A 429 from the limiter: `Retry-After` in whole seconds (at least 1, at
/// most one refill period, `max_wait`) and a JSON body.
#[track_caller]
fn assert_rate_limited(r: &Reply, max_wait: u64, what: &str) {
    assert_eq!(r.status, 429, "{what}: status; body {:?}", r.text());
    let wait: u64 = r
        .h("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {:?}", r.h("retry-after")));
    assert!((1..=max_wait).contains(&wait), "{what}: Retry-After {wait}");
    assert!(
        r.h("content-type").starts_with("application/json"),
        "{what}: content-type {:?}",
        r.h("content-type")
    );
    if !r.body.is_empty() {
        let v = r.json();
        assert_eq!(v["code"], "rate_limited", "{what}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_429_with_retry_after_then_refill() {
    let s = stands(RATE_2_BURST_5).await;
    let h = store_png(&s, "/pbxt/rl/out-0.png", fixtures::PNG).await;
    let limited_before = s.proxy.metric("permaproxy_rate_limited_total").await;

    // Six GETs at once: a refill (one token per 0.5 s) cannot slip in
    // between them however slow the machine is, so exactly the burst passes.
    let replies = futures::future::join_all((0..6).map(|_| get(&s.proxy, &h.path, &[]))).await;
    let (ok, limited): (Vec<&Reply>, Vec<&Reply>) = replies.iter().partition(|r| r.status == 200);
    assert_eq!(
        ok.len(),
        5,
        "the burst: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in ok {
        assert_ok_bytes(r, fixtures::PNG, "GET within the burst");
    }
    assert_eq!(limited.len(), 1);
    let r = limited[0];
    assert!(!r.body.is_empty(), "a GET 429 carries a JSON body");
    // At 2 tokens/s the next token is at most 0.5 s away, rounded up to 1 s.
    assert_rate_limited(r, 1, "6th GET");
    assert_eq!(
        s.proxy.metric("permaproxy_rate_limited_total").await - limited_before,
        1.0,
        "permaproxy_rate_limited_total counts the refusal"
    );

    // Refill: a token comes back within about half a second.
    let r = get_until_ok(&s.proxy, &h.path, &[], secs(10))
        .await
        .expect("the bucket never refilled");
    assert_ok_bytes(&r, fixtures::PNG, "GET after the refill");
    assert!(
        metric_reaches(
            &s.proxy,
            r#"permaproxy_http_requests_total{route="hosted",status="4xx"}"#,
            1.0
        )
        .await,
        "the 429 is counted as hosted 4xx"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_is_untouched_by_the_limit() {
    let s = stands(SLOW_REFILL_BURST_5).await;
    let h = store_png(&s, "/pbxt/pt/out-0.png", fixtures::PNG).await;

    // Far more pass-through requests than the burst: all reach the upstream.
    for i in 0..30 {
        let r = get(&s.proxy, &format!("/echo/pt?i={i}"), &[]).await;
        assert_eq!(r.status, 200, "pass-through GET {i}: {:?}", r.text());
        assert_eq!(r.h("x-echo-path"), format!("/echo/pt?i={i}"));
    }
    assert_eq!(
        s.api.count("/echo/pt"),
        30,
        "every request reached the upstream"
    );

    // ...and they took nothing from the hosted-image bucket.
    for i in 0..5 {
        let r = get(&s.proxy, &h.path, &[]).await;
        assert_ok_bytes(
            &r,
            fixtures::PNG,
            &format!("hosted GET {i} after pass-through"),
        );
    }
    assert_rate_limited(&get(&s.proxy, &h.path, &[]).await, 20, "6th hosted GET");

    // With the hosted bucket empty, pass-through still flows, HEAD and POST too.
    for i in 0..20 {
        let r = get(&s.proxy, &format!("/echo/after?i={i}"), &[]).await;
        assert_eq!(r.status, 200, "pass-through GET {i} while limited");
        let r = fetch(client().head(s.proxy.url("/echo/after-head"))).await;
        assert_eq!(r.status, 200, "pass-through HEAD {i} while limited");
        let r = fetch(
            client()
                .post(s.proxy.url("/echo/after-post"))
                .body(format!("b{i}")),
        )
        .await;
        assert_eq!(r.status, 200, "pass-through POST {i} while limited");
        assert_eq!(r.text(), format!("b{i}"));
    }
    assert_eq!(s.api.count("/echo/after"), 20);
    assert_eq!(s.api.count("/echo/after-head"), 20);
    assert_eq!(s.api.count("/echo/after-post"), 20);
    assert!(
        metric_reaches(
            &s.proxy,
            r#"permaproxy_http_requests_total{route="passthrough",status="2xx"}"#,
            90.0
        )
        .await
    );
    assert_eq!(
        s.proxy.metric("permaproxy_rate_limited_total").await,
        1.0,
        "only the one hosted GET was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_does_not_escape_the_limit() {
    let s = stands(SLOW_REFILL_BURST_5).await;
    let h = store_png(&s, "/pbxt/xff/out-0.png", fixtures::PNG).await;
    // A new made-up address on every request: without TRUST_FORWARDED_FOR
    // the socket address (127.0.0.1) is the client, so they share one bucket.
    for i in 0..5 {
        let xff = format!("203.0.113.{}", i + 1);
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", &xff)]).await;
        assert_ok_bytes(&r, fixtures::PNG, &format!("GET {i} as {xff}"));
    }
    for xff in ["203.0.113.99", "198.51.100.7, 127.0.0.1", "::1", "10.0.0.1"] {
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", xff)]).await;
        assert_rate_limited(&r, 20, &format!("spoofed X-Forwarded-For: {xff}"));
    }
    assert_rate_limited(&get(&s.proxy, &h.path, &[]).await, 20, "no X-Forwarded-For");
    // HEAD draws from the same bucket.
    let r = fetch(
        client()
            .head(s.proxy.url(&h.path))
            .header("x-forwarded-for", "192.0.2.1"),
    )
    .await;
    assert_rate_limited(&r, 20, "HEAD");
    assert_eq!(s.proxy.metric("permaproxy_rate_limited_total").await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_forwarded_for_gives_each_client_its_bucket() {
    let s = stands(&[
        ("IMAGE_DOWNLOAD_RATE_PER_SEC", "0.05"),
        ("IMAGE_DOWNLOAD_BURST", "5"),
        ("TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let h = store_png(&s, "/pbxt/xfft/out-0.png", fixtures::PNG).await;
    // The edge appends its own hop; the first address is the client.
    let clients = [
        ("203.0.113.1", "203.0.113.1"),
        ("203.0.113.2", "203.0.113.2, 10.0.0.5"),
        ("2001:db8::7", "2001:db8::7"),
    ];
    for (who, xff) in clients {
        for i in 0..5 {
            let r = get(&s.proxy, &h.path, &[("x-forwarded-for", xff)]).await;
            assert_ok_bytes(&r, fixtures::PNG, &format!("{who}: GET {i}"));
        }
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", xff)]).await;
        assert_rate_limited(&r, 20, &format!("{who}: 6th GET"));
        // Same first address, another later hop: still the same client.
        let via = format!("{who}, 10.9.9.9");
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", &via)]).await;
        assert_rate_limited(&r, 20, &format!("{who} via another hop"));
    }
    // No header: the socket address has a bucket of its own.
    let r = get(&s.proxy, &h.path, &[]).await;
    assert_ok_bytes(&r, fixtures::PNG, "socket address, untouched bucket");
    assert_eq!(s.proxy.metric("permaproxy_rate_limited_total").await, 6.0);
}

/// Finding 8: one IPv6 host holds a whole /64 and can rotate through it;
/// keyed by the full address, every request got a fresh bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_08_ipv6_rotation_within_a_64_shares_one_bucket() {
    let s = stands(&[
        ("IMAGE_DOWNLOAD_RATE_PER_SEC", "0.05"),
        ("IMAGE_DOWNLOAD_BURST", "3"),
        ("TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let h = store_png(&s, "/pbxt/v6/out-0.png", fixtures::PNG).await;
    for i in 1..=3 {
        let xff = format!("2001:db8:0:7::{i:x}");
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", &xff)]).await;
        assert_ok_bytes(&r, fixtures::PNG, &format!("GET as {xff}"));
    }
    for xff in ["2001:db8:0:7::ffff", "2001:db8:0:7:1234:5678:9abc:def0"] {
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", xff)]).await;
        assert_rate_limited(&r, 20, &format!("rotated within the /64: {xff}"));
    }
    // Another /64 is another client.
    let r = get(&s.proxy, &h.path, &[("x-forwarded-for", "2001:db8:0:8::1")]).await;
    assert_ok_bytes(&r, fixtures::PNG, "another /64");
}

/// Finding 11 (issue 20): with TRUST_FORWARDED_FOR the leftmost entry,
/// which the client writes, named the client, so rotating it escaped the
/// limit. With TRUSTED_PROXIES (here the socket peer, 127.0.0.1, plays the
/// edge) the client is the rightmost entry that is not a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_rotating_the_leftmost_entry_does_not_escape_the_limit() {
    let s = stands(&[
        ("IMAGE_DOWNLOAD_RATE_PER_SEC", "0.05"),
        ("IMAGE_DOWNLOAD_BURST", "3"),
        ("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
    ])
    .await;
    let h = store_png(&s, "/pbxt/xffr/out-0.png", fixtures::PNG).await;
    // One client (198.51.100.7, appended by the edge) behind made-up
    // entries that change on every request, through a trusted inner hop.
    for i in 0..3 {
        let xff = format!("203.0.113.{i}, 198.51.100.7, 10.0.0.4");
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", &xff)]).await;
        assert_ok_bytes(&r, fixtures::PNG, &format!("GET {i} as {xff}"));
    }
    for xff in [
        "203.0.113.99, 198.51.100.7",
        "1.1.1.1, 2.2.2.2, 198.51.100.7, 10.9.9.9",
    ] {
        let r = get(&s.proxy, &h.path, &[("x-forwarded-for", xff)]).await;
        assert_rate_limited(&r, 20, &format!("rotated leftmost entries: {xff}"));
    }
    // Another client behind the same edge has its own bucket.
    let r = get(
        &s.proxy,
        &h.path,
        &[("x-forwarded-for", "203.0.113.99, 198.51.100.8")],
    )
    .await;
    assert_ok_bytes(&r, fixtures::PNG, "another client");
    assert_eq!(s.proxy.metric("permaproxy_rate_limited_total").await, 2.0);
}

/// Finding 11: TRUST_FORWARDED_FOR=true alone keeps its meaning, and the
/// start says what that risks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_trust_forwarded_for_alone_warns_at_start() {
    let s = stands(&[("TRUST_FORWARDED_FOR", "true")]).await;
    let log = s.proxy.log_text();
    assert!(
        log.lines().any(
            |l| l.contains("TRUST_FORWARDED_FOR=true without TRUSTED_PROXIES")
                && l.contains("rotate")
        ),
        "no warning naming the risk:\n{log}"
    );
    let s = stands(&[("TRUSTED_PROXIES", "private")]).await;
    assert!(!s.proxy.log_text().contains("without TRUSTED_PROXIES"));
}
