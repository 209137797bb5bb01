//! Safe by default, for webhooks: attribution only on a trusted word, and a
//! retried delivery rewritten like the first.

use crate::common::stands::generate;
use crate::common::*;
use crate::verify::studio_api_verifies;
use crate::*;
use serde_json::json;

/// Finding 3: a prediction seen starting for an id the client only claimed
/// used to file Replicate's genuine webhook under that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_a_claimed_id_never_attributes_a_webhook() {
    let s = stands(&[]).await;
    s.api
        .set_generate_json(&prediction("p_claim", "starting", json!(null)));
    // No session: Studio API names nobody; the client claims "vera".
    let r = generate(&s.proxy, "{}", &[("x-user-id", "vera")]).await;
    assert_eq!(r.status, 200);
    let src = s
        .host
        .add_url("/hook/claim.png", fixtures::unique_png(2500), "image/png");
    let d = Delivery::signed(
        "msg_claim",
        &prediction("p_claim", "succeeded", json!([src])),
    );
    assert_eq!(deliver(&s.proxy, HOOK, &d).await.status, 200);
    assert!(wait_until(secs(20), || stored(&s.proxy, "anonymous", &src)).await);
    assert!(!stored(&s.proxy, "vera", &src).await, "filed under a claim");
}

/// Finding 7: Studio API failed the first delivery; Replicate retries with
/// the same webhook-id. The retry used to go through with Replicate's URLs,
/// which die within the hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_07_a_retried_delivery_is_rewritten_and_re_signed() {
    let s = stands(&[("IMAGE_WEBHOOK_REWRITE", "true")]).await;
    let bytes = fixtures::unique_png(2600);
    let src = s
        .host
        .add_url("/hook/retry.png", bytes.clone(), "image/png");
    let d = Delivery::signed(
        "msg_retry",
        &prediction("p_retry", "succeeded", json!([src])),
    );
    let path = format!("{HOOK}?userId=rae");
    s.api
        .set_response(HOOK, Canned::new(500, "text/plain", "down"));
    assert_eq!(deliver(&s.proxy, &path, &d).await.status, 500);
    s.api.set_response(HOOK, Canned::json(&json!({"ok": true})));
    assert_eq!(deliver(&s.proxy, &path, &d).await.status, 200);

    let hooks = received_hooks(&s.api);
    assert_eq!(hooks.len(), 2);
    let (retry, first) = (&hooks[0], &hooks[1]);
    let url_of = |got: &RecordedRequest| {
        let v: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON body");
        v["output"][0].as_str().unwrap_or_default().to_string()
    };
    let hosted = parse_hosted(&url_of(retry))
        .unwrap_or_else(|| panic!("the retry was not rewritten: {}", url_of(retry)));
    assert_eq!(hosted.user, "rae");
    assert_eq!(
        url_of(retry),
        url_of(first),
        "the same hosted URL both times"
    );
    assert_eq!(retry.body, first.body);
    assert!(
        studio_api_verifies(retry),
        "the retry's signature fails at Studio API"
    );
    assert_eq!(retry.header("webhook-id"), Some("msg_retry"));
    assert_eq!(
        s.proxy
            .metric(r#"permaproxy_webhooks_total{outcome="duplicate"}"#)
            .await,
        1.0
    );
    assert!(wait_until(secs(20), || stored(&s.proxy, "rae", &src)).await);
    s.host.expire("/hook/retry.png");
    assert_same_bytes(
        &get_path(&s.proxy, &hosted.path).await.body,
        &bytes,
        "hosted",
    );
    assert_eq!(s.host.hits("/hook/retry.png"), 1, "captured once");
}
