//! Persist modes, the before_response fallback, and what a request for a
//! pending image gets: the bytes, a 307 to the source, or a JSON error.

use crate::common::*;
use crate::*;
use std::time::Duration;

const PENDING_TIER: &str = r#"permaproxy_hosted_requests_total{tier="pending"}"#;
const HOSTED_REQUESTS: &str = "permaproxy_hosted_requests_total";
const TOKEN: &str = "reliability-admin-token-padded-to-32-chars";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_answers_at_once_and_stores_without_any_request() {
    let s = stands(&[("IMAGE_PERSIST_MODE", "background")]).await;
    let imgs: Vec<Vec<u8>> = (0..3).map(|i| fixtures::unique_png(500 + i)).collect();
    let mut urls = Vec::new();
    for (i, img) in imgs.iter().enumerate() {
        let path = format!("/bg/out-{i}.png");
        urls.push(s.host.add_url(&path, img.clone(), "image/png"));
        s.host.slow(&path, Duration::from_secs(3));
    }
    let out = generate_outputs(&s, &urls).await;
    let hs: Vec<Hosted> = out.iter().map(hosted).collect();
    let storage = s.proxy.storage_path();
    // The answer did not wait: the sources have not answered yet.
    for h in &hs {
        assert!(!is_stored(storage, &h.image_id), "answered after storing");
    }
    assert!(
        wait_until(secs(20), || async {
            hs.iter().all(|h| is_stored(storage, &h.image_id))
        })
        .await,
        "background downloads did not finish"
    );
    assert_eq!(s.proxy.metric(HOSTED_REQUESTS).await, 0.0, "no request");
    for (i, (h, img)) in hs.iter().zip(&imgs).enumerate() {
        let path = format!("/bg/out-{i}.png");
        assert_eq!(s.host.hits(&path), 1);
        s.host.expire(&path);
        assert_serves(&get_hosted(&s.proxy, h).await, img, "background image");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_first_hit_downloads_only_when_the_hosted_url_is_requested() {
    let s = stands(&[("IMAGE_PERSIST_MODE", "on_first_hit")]).await;
    let img = fixtures::unique_png(601);
    let src = s.host.add_url("/ofh/out-0.png", img.clone(), "image/png");
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    assert_eq!(h.image_id, expected_image_id(&src));
    assert_eq!(s.host.hits("/ofh/out-0.png"), 0, "nothing downloaded yet");
    assert_eq!(s.proxy.metric("permaproxy_pending_downloads").await, 1.0);
    // A second generate call and a metrics scrape later: still nothing.
    generate_outputs(&s, std::slice::from_ref(&src)).await;
    assert_eq!(s.host.hits("/ofh/out-0.png"), 0, "still lazy");
    assert!(!is_stored(s.proxy.storage_path(), &h.image_id));

    let first = get_hosted(&s.proxy, &h).await;
    assert_serves(&first, &img, "first hit");
    assert_eq!(first.h("content-type"), "image/png");
    assert_eq!(s.host.hits("/ofh/out-0.png"), 1);
    assert_eq!(s.proxy.metric(PENDING_TIER).await, 1.0);
    s.host.expire("/ofh/out-0.png");
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "second hit");
    assert_eq!(s.proxy.metric(PENDING_TIER).await, 1.0, "served as stored");
    assert_eq!(s.proxy.metric("permaproxy_pending_downloads").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_response_keeps_the_original_url_of_failed_downloads() {
    let s = stands(&[("IMAGE_DOWNLOAD_RETRIES", "1"), ("ADMIN_TOKEN", TOKEN)]).await;
    let failing = s.host.add_url("/br/out-0.png", fixtures::PNG, "image/png");
    s.host.fail_first("/br/out-0.png", 100, 503);
    let gone = s.host.url("/br/out-1.png");
    let html = s.host.add_url("/br/out-2.png", fixtures::HTML, "text/html");
    let img = fixtures::unique_png(701);
    let ok = s.host.add_url("/br/out-3.png", img.clone(), "image/png");
    let out = generate_outputs(&s, &[failing.clone(), gone.clone(), html.clone(), ok]).await;
    assert_kept(&out[0], &failing);
    assert_kept(&out[1], &gone);
    assert_kept(&out[2], &html);
    let h = hosted(&out[3]);
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "the good one");
    assert_eq!(
        s.proxy
            .metric(r#"permaproxy_rewritten_urls_total{result="kept"}"#)
            .await,
        3.0
    );
    assert_eq!(s.host.hits("/br/out-0.png"), 2, "1 attempt + 1 retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_pending_image_waits_for_the_download() {
    let s = stands(&[("IMAGE_PERSIST_MODE", "background")]).await;
    let img = fixtures::large_png(30_000, 801);
    let src = s.host.add_url("/pw/out-0.png", img.clone(), "image/png");
    s.host.slow("/pw/out-0.png", Duration::from_millis(1500));
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    let r = get_hosted(&s.proxy, &h).await;
    assert_serves(&r, &img, "waited for the pending download");
    assert_eq!(r.h("content-type"), "image/png");
    assert_eq!(s.proxy.metric(PENDING_TIER).await, 1.0);
    assert_eq!(
        s.host.hits("/pw/out-0.png"),
        1,
        "the GET joined the download"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_image_slower_than_the_persist_timeout_redirects_to_its_source() {
    let s = stands(&[
        ("IMAGE_PERSIST_MODE", "on_first_hit"),
        ("IMAGE_PERSIST_TIMEOUT_MS", "200"),
    ])
    .await;
    let img = fixtures::unique_png(901);
    let src = s.host.add_url("/pr/out-0.png", img.clone(), "image/png");
    s.host.slow("/pr/out-0.png", Duration::from_secs(2));
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    let r = get_hosted(&s.proxy, &h).await;
    assert_eq!(r.status, 307, "body {:?}", r.text());
    assert_eq!(r.h("location"), src, "redirected to the source");
    assert_eq!(r.h("cache-control"), "no-store");
    assert_eq!(s.proxy.metric(PENDING_TIER).await, 1.0);
    // The download goes on without the client.
    let storage = s.proxy.storage_path();
    assert!(
        wait_until(secs(20), || async { is_stored(storage, &h.image_id) }).await,
        "the download was dropped with the client"
    );
    s.host.expire("/pr/out-0.png");
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "after the 307");
    assert_eq!(s.host.hits("/pr/out-0.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finally_failed_image_gets_a_json_error_a_metric_and_an_admin_record() {
    let mut s = stands(&[
        ("IMAGE_PERSIST_MODE", "background"),
        ("IMAGE_DOWNLOAD_RETRIES", "1"),
        ("ADMIN_TOKEN", TOKEN),
    ])
    .await;
    let src = s.host.add_url("/ff/out-0.png", fixtures::PNG, "image/png");
    s.host.fail_first("/ff/out-0.png", 1000, 503);
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    assert!(wait_metric(&s.proxy, FAILED, 1.0).await, "never failed");

    for round in ["before restart", "after restart"] {
        let r = get_hosted(&s.proxy, &h).await;
        assert_ne!(r.status, 404, "{round}: a handed-out URL never 404s");
        assert!(r.status >= 500, "{round}: status {}", r.status);
        assert!(r.h("content-type").starts_with("application/json"));
        let v = r.json();
        assert_eq!(v["code"], "image_unavailable", "{round}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));

        let unauth = fetch(client().get(format!("{}/admin/failed", s.proxy.admin()))).await;
        assert_eq!(unauth.status, 401);
        let r = fetch(
            client()
                .get(format!("{}/admin/failed", s.proxy.admin()))
                .bearer_auth(TOKEN),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let failed = r.json()["failed"].as_array().cloned().unwrap_or_default();
        assert_eq!(failed.len(), 1, "{round}: {failed:?}");
        assert_eq!(failed[0]["id"], h.image_id.as_str());
        assert_eq!(failed[0]["user_id"], h.user.as_str());
        assert_eq!(failed[0]["source"], src.as_str());
        assert!(failed[0]["reason"].as_str().is_some_and(|e| !e.is_empty()));
        s.proxy.restart().await;
    }
    assert_eq!(s.host.hits("/ff/out-0.png"), 2, "not retried after restart");
}

/// Finding 13: an image handed out in on_first_hit mode that nobody asked
/// for before its source expired was lost. By IMAGE_FIRST_HIT_DEADLINE_SECS
/// it is downloaded anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_on_first_hit_downloads_unrequested_images_by_the_deadline() {
    let s = stands(&[
        ("IMAGE_PERSIST_MODE", "on_first_hit"),
        ("IMAGE_FIRST_HIT_DEADLINE_SECS", "2"),
        // Due rows are looked for every sixth of the lease: once a second.
        ("IMAGE_PENDING_LEASE_SECS", "6"),
    ])
    .await;
    let img = fixtures::unique_png(1301);
    let src = s.host.add_url("/dl/out-0.png", img.clone(), "image/png");
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    assert_eq!(s.host.hits("/dl/out-0.png"), 0, "lazy at first");
    let storage = s.proxy.storage_path();
    assert!(
        wait_until(secs(20), || async { is_stored(storage, &h.image_id) }).await,
        "never downloaded by its deadline"
    );
    // The source expires; nobody had asked, and the image is still there.
    s.host.expire("/dl/out-0.png");
    assert_serves(
        &get_hosted(&s.proxy, &h).await,
        &img,
        "after the source expired",
    );
    assert_eq!(s.host.hits("/dl/out-0.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_first_hit_deadline_stays_purely_lazy() {
    let s = stands(&[
        ("IMAGE_PERSIST_MODE", "on_first_hit"),
        ("IMAGE_FIRST_HIT_DEADLINE_SECS", "0"),
        ("IMAGE_PENDING_LEASE_SECS", "6"),
    ])
    .await;
    let src = s
        .host
        .add_url("/lazy/out-0.png", fixtures::unique_png(1302), "image/png");
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    hosted(&out[0]);
    // Three takeover passes go by without a download.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.host.hits("/lazy/out-0.png"), 0);
    assert!(
        s.proxy
            .log_text()
            .contains("IMAGE_FIRST_HIT_DEADLINE_SECS=0"),
        "a start-up warning"
    );
}
