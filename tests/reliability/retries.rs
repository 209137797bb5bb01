//! Downloads retry 5xx answers, truncated bodies and timeouts; a 404 is final.

use crate::common::*;
use crate::raw::{Answer, RawSource};
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_5xx_then_success_is_stored_after_retries() {
    let s = stands(&[("IMAGE_DOWNLOAD_RETRIES", "5")]).await;
    let img = fixtures::unique_png(301);
    let src = s
        .host
        .add_url("/pbxt/r5/out-0.png", img.clone(), "image/png");
    s.host.fail_first("/pbxt/r5/out-0.png", 2, 503);
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    let h = hosted(&out[0]);
    assert_eq!(h.image_id, expected_image_id(&src));
    assert_eq!(
        s.host.hits("/pbxt/r5/out-0.png"),
        3,
        "2 failures + 1 success"
    );
    assert_eq!(s.proxy.metric(RETRY).await, 2.0, "one retry per 503");
    assert_eq!(s.proxy.metric(OK).await, 1.0);
    s.host.expire("/pbxt/r5/out-0.png");
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "after retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_final_and_keeps_the_original_url() {
    let s = stands(&[("IMAGE_DOWNLOAD_RETRIES", "5")]).await;
    let gone = s.host.url("/pbxt/gone/out-0.png"); // never added: 404
    let ok = s
        .host
        .add_url("/pbxt/gone/out-1.png", fixtures::PNG, "image/png");
    let out = generate_outputs(&s, &[gone.clone(), ok]).await;
    assert_kept(&out[0], &gone);
    hosted(&out[1]);
    assert_eq!(
        s.host.hits("/pbxt/gone/out-0.png"),
        1,
        "a 404 is not retried"
    );
    assert_eq!(s.proxy.metric(RETRY).await, 0.0);
    assert_eq!(s.proxy.metric(FAILED).await, 1.0);
    assert!(!is_stored(
        s.proxy.storage_path(),
        &expected_image_id(&gone)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_every_time_is_retried_then_given_up() {
    let s = stands(&[("IMAGE_DOWNLOAD_RETRIES", "2")]).await;
    let img = fixtures::large_png(40_000, 302);
    let src = s.host.add_url("/pbxt/t/out-0.png", img, "image/png");
    s.host.truncate("/pbxt/t/out-0.png", 1000);
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    assert_kept(&out[0], &src);
    assert_eq!(s.host.hits("/pbxt/t/out-0.png"), 3, "1 attempt + 2 retries");
    assert_eq!(s.proxy.metric(RETRY).await, 2.0);
    assert_eq!(s.proxy.metric(FAILED).await, 1.0);
    assert_nothing_stored(s.proxy.storage_path(), "truncated every time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_once_is_retried_and_stored_whole() {
    let img = fixtures::large_png(60_000, 303);
    let body = img.clone();
    // First answer: full Content-Length, a third of the body, clean close.
    let src = RawSource::start(move |n| {
        if n == 0 {
            Answer::Short(body.clone(), body.len() / 3)
        } else {
            Answer::Full(body.clone())
        }
    })
    .await;
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = ProxyOptions::new(&api.url())
        .env("REPLICATE_HOSTS", &src.addr)
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    let url = src.url("/pbxt/short/out-0.png");
    let out = generate_outputs(&s, std::slice::from_ref(&url)).await;
    let h = hosted(&out[0]);
    assert_eq!(src.requests(), 2, "the short body was retried once");
    assert_eq!(s.proxy.metric(RETRY).await, 1.0);
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "whole image");
    assert!(staging_files(s.proxy.storage_path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_slower_than_the_timeout_is_retried_then_kept() {
    let s = stands(&[
        ("IMAGE_DOWNLOAD_TIMEOUT_MS", "300"),
        ("IMAGE_DOWNLOAD_RETRIES", "1"),
    ])
    .await;
    let src = s
        .host
        .add_url("/pbxt/slow/out-0.png", fixtures::PNG, "image/png");
    s.host
        .slow("/pbxt/slow/out-0.png", std::time::Duration::from_secs(5));
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    assert_kept(&out[0], &src);
    assert_eq!(s.host.hits("/pbxt/slow/out-0.png"), 2, "timed out twice");
    assert_eq!(s.proxy.metric(RETRY).await, 1.0);
    assert_eq!(s.proxy.metric(FAILED).await, 1.0);
    assert_nothing_stored(s.proxy.storage_path(), "timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_then_kept() {
    let api = StudioApi::start().await;
    let host = FileHost::start().await;
    let dead = format!("127.0.0.1:{}", free_port()); // nothing listens there
    let opts = ProxyOptions::new(&api.url())
        .env("REPLICATE_HOSTS", &format!("{},{dead}", host.addr()))
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
        .env("IMAGE_DOWNLOAD_RETRIES", "2");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    let src = format!("http://{dead}/pbxt/dead/out-0.png");
    let out = generate_outputs(&s, std::slice::from_ref(&src)).await;
    assert_kept(&out[0], &src);
    assert_eq!(
        s.proxy.metric(RETRY).await,
        2.0,
        "connect errors are retried"
    );
    assert_eq!(s.proxy.metric(FAILED).await, 1.0);
    assert_nothing_stored(s.proxy.storage_path(), "unreachable source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_mid_way_times_out_and_leaves_no_temp_file() {
    let img = fixtures::large_png(100_000, 304);
    let body = img.clone();
    let src = RawSource::start(move |_| Answer::Stall(body.clone(), body.len() / 2)).await;
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = ProxyOptions::new(&api.url())
        .env("REPLICATE_HOSTS", &src.addr)
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
        .env("IMAGE_DOWNLOAD_TIMEOUT_MS", "300")
        .env("IMAGE_DOWNLOAD_RETRIES", "1");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    let url = src.url("/pbxt/stall/out-0.png");
    let out = generate_outputs(&s, std::slice::from_ref(&url)).await;
    assert_kept(&out[0], &url);
    assert_eq!(src.requests(), 2, "the stalled body was retried once");
    assert_eq!(s.proxy.metric(RETRY).await, 1.0);
    assert_eq!(s.proxy.metric(FAILED).await, 1.0);
    assert_nothing_stored(s.proxy.storage_path(), "stalled body");
}
