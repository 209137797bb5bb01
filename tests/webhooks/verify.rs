//! Verification: bad signatures, old timestamps, several signatures, the
//! 401 option; the rewritten body re-signed so Studio API's own check
//! passes; and sync-mode responses still processing.

use crate::common::stands::generate;
use crate::common::*;
use crate::*;
use serde_json::json;

fn m(outcome: &str) -> String {
    format!(r#"permaproxy_webhooks_total{{outcome="{outcome}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_webhooks_are_forwarded_but_not_captured() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/v/bad.png", fixtures::unique_png(1400), "image/png");
    let body = prediction("p_bad", "succeeded", json!([src])).to_string();
    let now = now_secs().to_string();
    let old = (now_secs() - 3600).to_string();
    let cases = [
        // Signed with another secret.
        (
            "msg_b1",
            now.clone(),
            sign("whsec_b3RoZXIgc2VjcmV0", "msg_b1", &now, body.as_bytes()),
        ),
        // Right secret, but an hour old.
        (
            "msg_b2",
            old.clone(),
            sign(SECRET, "msg_b2", &old, body.as_bytes()),
        ),
        // Signed for another body.
        ("msg_b3", now.clone(), sign(SECRET, "msg_b3", &now, b"{}")),
        ("msg_b4", now.clone(), String::new()),
    ];
    for (id, ts, signature) in cases {
        let d = Delivery {
            id: id.into(),
            ts,
            body: body.clone(),
            signature,
        };
        let r = deliver(&s.proxy, &format!("{HOOK}?userId=zed"), &d).await;
        assert_eq!(r.status, 200, "{id}: forwarded, Studio API answered");
        let got = &received_hooks(&s.api)[0];
        assert_eq!(
            got.body.as_ref(),
            body.as_bytes(),
            "{id}: forwarded unchanged"
        );
    }
    assert_eq!(s.proxy.metric(&m("unverified")).await, 4.0);
    assert_eq!(s.proxy.metric(&m("captured")).await, 0.0);
    assert_eq!(s.host.hits("/v/bad.png"), 0, "nothing captured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_valid_signature_among_several_is_enough() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/v/multi.png", fixtures::unique_png(1401), "image/png");
    let mut d = Delivery::signed(
        "msg_multi",
        &prediction("p_multi", "succeeded", json!([src])),
    );
    // As during a secret rotation: an old signature beside the valid one.
    let other = sign("whsec_b2xkIHNlY3JldA==", &d.id, &d.ts, d.body.as_bytes());
    d.signature = format!("{other} {}", d.signature);
    assert_eq!(
        deliver(&s.proxy, &format!("{HOOK}?userId=amo"), &d)
            .await
            .status,
        200
    );
    assert!(wait_until(secs(20), || stored(&s.proxy, "amo", &src)).await);
    assert_eq!(s.proxy.metric(&m("captured")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reject_invalid_a_bad_webhook_gets_401_and_never_reaches_studio_api() {
    let s = stands(&[("REPLICATE_WEBHOOK_REJECT_INVALID", "true")]).await;
    let mut d = Delivery::signed("msg_rej", &prediction("p_rej", "succeeded", json!([])));
    d.body = d.body.replace("succeeded", "failed");
    let r = deliver(&s.proxy, HOOK, &d).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["code"], "webhook_rejected");
    assert!(received_hooks(&s.api).is_empty());
    assert_eq!(s.proxy.metric(&m("rejected")).await, 1.0);
}

/// Studio API's own check of a forwarded webhook, with its own code.
pub fn studio_api_verifies(got: &RecordedRequest) -> bool {
    let (Some(id), Some(ts), Some(sigs)) = (
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        got.header("webhook-signature"),
    ) else {
        return false;
    };
    let expected = sign(SECRET, id, ts, &got.body);
    sigs.split(' ').any(|s| s == expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_body_is_re_signed_and_verifies_at_studio_api() {
    let s = stands(&[("IMAGE_WEBHOOK_REWRITE", "true")]).await;
    let bytes = fixtures::unique_png(1402);
    let src = s.host.add_url("/v/rw.png", bytes.clone(), "image/png");
    let d = Delivery::signed("msg_rw", &prediction("p_rw", "succeeded", json!([src])));
    assert_eq!(
        deliver(&s.proxy, &format!("{HOOK}?userId=bea"), &d)
            .await
            .status,
        200
    );
    let got = &received_hooks(&s.api)[0];
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON body");
    let url = v["output"][0].as_str().unwrap();
    let h = parse_hosted(url).unwrap_or_else(|| panic!("not rewritten: {url}"));
    assert_eq!(h.user, "bea");
    // Same id and timestamp, a new signature over the new body.
    assert_eq!(got.header("webhook-id"), Some("msg_rw"));
    assert_eq!(got.header("webhook-timestamp"), Some(d.ts.as_str()));
    assert_ne!(got.header("webhook-signature"), Some(d.signature.as_str()));
    assert!(studio_api_verifies(got), "Studio API's verification fails");
    assert_eq!(
        got.header("content-length").map(str::to_string),
        Some(got.body.len().to_string())
    );
    // Everything but the URL is as Replicate sent it.
    let mut sent: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    sent["output"] = v["output"].clone();
    assert_eq!(v, sent);
    // The hosted URL Studio API stores works once the capture is done.
    assert!(wait_until(secs(20), || stored(&s.proxy, "bea", &src)).await);
    s.host.expire("/v/rw.png");
    assert_same_bytes(&get_path(&s.proxy, &h.path).await.body, &bytes, "hosted");
}

/// Replicate's `Prefer: wait` answers can still say "processing" while
/// holding file outputs; a rewrite route rewrites them whatever the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_mode_answer_still_processing_is_rewritten() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/v/sync.png", fixtures::unique_png(1403), "image/png");
    s.api
        .set_generate_json(&prediction("p_sync", "processing", json!([src])));
    let r = generate(
        &s.proxy,
        "{}",
        &[("x-user-id", "cid"), ("prefer", "wait=60")],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "processing");
    let h = parse_hosted(v["output"][0].as_str().unwrap()).expect("rewritten while processing");
    assert_eq!(h.user, "cid");
    assert_eq!(get_path(&s.proxy, &h.path).await.status, 200);
}
