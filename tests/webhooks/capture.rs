//! Capture: before any client asks, whose images they are, duplicates,
//! partial outputs, and a crash right after the webhook was answered.

use crate::common::stands::generate;
use crate::common::*;
use crate::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_before_any_client_asks_then_a_poll_is_rewritten() {
    let s = stands(&[]).await;
    let bytes = fixtures::unique_png(1300);
    let src = s
        .host
        .add_url("/hook/a/out-0.png", bytes.clone(), "image/png");
    let body = prediction("p_early", "succeeded", json!([src]));
    let d = Delivery::signed("msg_early", &body);
    let r = deliver(&s.proxy, &format!("{HOOK}?userId=uma"), &d).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Forwarded untouched (no rewrite by default), headers and all.
    let got = &received_hooks(&s.api)[0];
    assert_eq!(
        got.body.as_ref(),
        d.body.as_bytes(),
        "the body Studio API got"
    );
    assert_eq!(got.header("webhook-signature"), Some(d.signature.as_str()));
    assert_eq!(got.path, format!("{HOOK}?userId=uma"));
    // Stored with no client request at all.
    let captured = wait_until(secs(20), || stored(&s.proxy, "uma", &src)).await;
    assert!(captured, "not captured");
    assert_eq!(
        s.proxy
            .metric(r#"permaproxy_webhooks_total{outcome="captured"}"#)
            .await,
        1.0
    );
    // An hour later Replicate's URL is dead; the app finally polls.
    s.host.expire("/hook/a/out-0.png");
    let polled = poll(&s, "p_early", "uma", &body).await;
    let url = polled["output"][0].as_str().unwrap();
    let h = parse_hosted(url).unwrap_or_else(|| panic!("not rewritten: {url}"));
    assert_eq!(h.user, "uma");
    let img = get_path(&s.proxy, &h.path).await;
    assert_eq!(img.status, 200);
    assert_same_bytes(&img.body, &bytes, "captured image");
    assert_eq!(
        s.host.hits("/hook/a/out-0.png"),
        1,
        "downloaded once, by the capture"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_is_learned_from_the_prediction_seen_starting() {
    let s = stands(&[]).await;
    // The app asks Studio API to generate; Studio API answers with a
    // prediction still starting (no output yet), for user "vera".
    s.api
        .set_generate_json(&prediction("p_learn", "starting", json!(null)));
    let r = generate(
        &s.proxy,
        "{}",
        &[("x-user-id", "vera"), ("authorization", &session("vera"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "starting");
    // Replicate's webhook names no user (no query parameter).
    let src = s
        .host
        .add_url("/hook/learn.png", fixtures::unique_png(1301), "image/png");
    let d = Delivery::signed(
        "msg_learn",
        &prediction("p_learn", "succeeded", json!([src])),
    );
    assert_eq!(deliver(&s.proxy, HOOK, &d).await.status, 200);
    assert!(wait_until(secs(20), || stored(&s.proxy, "vera", &src)).await);
    assert!(!stored(&s.proxy, "anonymous", &src).await);
    assert_eq!(
        s.proxy.metric("permaproxy_webhook_anonymous_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_known_prediction_or_parameter_the_user_is_anonymous() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/hook/anon.png", fixtures::unique_png(1302), "image/png");
    let d = Delivery::signed("msg_anon", &prediction("p_anon", "succeeded", json!([src])));
    assert_eq!(deliver(&s.proxy, HOOK, &d).await.status, 200);
    assert!(wait_until(secs(20), || stored(&s.proxy, "anonymous", &src)).await);
    assert_eq!(
        s.proxy.metric("permaproxy_webhook_anonymous_total").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_is_captured_once() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/hook/dup.png", fixtures::unique_png(1303), "image/png");
    let d = Delivery::signed("msg_dup", &prediction("p_dup", "succeeded", json!([src])));
    for _ in 0..3 {
        let r = deliver(&s.proxy, &format!("{HOOK}?userId=wes"), &d).await;
        assert_eq!(r.status, 200);
    }
    assert!(wait_until(secs(20), || stored(&s.proxy, "wes", &src)).await);
    assert_eq!(
        received_hooks(&s.api).len(),
        3,
        "every delivery reaches Studio API"
    );
    let m = |o: &str| format!(r#"permaproxy_webhooks_total{{outcome="{o}"}}"#);
    assert_eq!(s.proxy.metric(&m("captured")).await, 1.0);
    assert_eq!(s.proxy.metric(&m("duplicate")).await, 2.0);
    assert_eq!(s.host.hits("/hook/dup.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_output_events_are_captured_as_they_come() {
    let s = stands(&[]).await;
    let a = s
        .host
        .add_url("/hook/part-0.png", fixtures::unique_png(1304), "image/png");
    let b = s
        .host
        .add_url("/hook/part-1.png", fixtures::unique_png(1305), "image/png");
    // An "output" event while processing, with the first output only.
    let first = Delivery::signed("msg_p1", &prediction("p_part", "processing", json!([a])));
    assert_eq!(
        deliver(&s.proxy, &format!("{HOOK}?userId=xia"), &first)
            .await
            .status,
        200
    );
    assert!(wait_until(secs(20), || stored(&s.proxy, "xia", &a)).await);
    // "completed" with both: the second is new, the first is not fetched again.
    let done = Delivery::signed("msg_p2", &prediction("p_part", "succeeded", json!([a, b])));
    assert_eq!(
        deliver(&s.proxy, &format!("{HOOK}?userId=xia"), &done)
            .await
            .status,
        200
    );
    assert!(wait_until(secs(20), || stored(&s.proxy, "xia", &b)).await);
    assert_eq!(s.host.hits("/hook/part-0.png"), 1);
    // A "start" event holds no output: nothing captured, nothing broken.
    let start = Delivery::signed("msg_p0", &prediction("p_part2", "starting", json!(null)));
    assert_eq!(deliver(&s.proxy, HOOK, &start).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_answering_the_webhook_the_image_is_recovered() {
    let mut s = stands(&[]).await;
    let bytes = fixtures::large_png(150_000, 1306);
    let src = s
        .host
        .add_url("/hook/crash.png", bytes.clone(), "image/png");
    // The download cannot finish before the kill.
    s.host
        .pause_mid_body("/hook/crash.png", Duration::from_secs(30));
    let d = Delivery::signed(
        "msg_crash",
        &prediction("p_crash", "succeeded", json!([src])),
    );
    let r = deliver(&s.proxy, &format!("{HOOK}?userId=yan"), &d).await;
    assert_eq!(r.status, 200);
    assert!(wait_until(secs(10), || async { s.host.hits("/hook/crash.png") == 1 }).await);
    s.proxy.kill9();
    s.host.clear_faults("/hook/crash.png");
    s.proxy.restart().await;
    assert!(
        wait_until(secs(30), || stored(&s.proxy, "yan", &src)).await,
        "the captured image was lost with the process"
    );
    s.host.expire("/hook/crash.png");
    let polled = poll(
        &s,
        "p_crash",
        "yan",
        &prediction("p_crash", "succeeded", json!([src])),
    )
    .await;
    let h = parse_hosted(polled["output"][0].as_str().unwrap()).expect("rewritten");
    let img = get_path(&s.proxy, &h.path).await;
    assert_same_bytes(&img.body, &bytes, "recovered after kill -9");
}
