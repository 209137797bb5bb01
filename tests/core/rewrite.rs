//! Which strings in generation responses are rewritten, and which are not.

use crate::common::*;
use crate::{
    answer_json, assert_content_length, assert_in_order, generate, get_hosted, hosted, stands, GEN,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_member_is_rewritten_with_siblings() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/abc/out-0.png", fixtures::PNG, "image/png");
    answer_json(
        &s.api,
        &format!(
            r#"{{"id":"p1","status":"succeeded","image":{{"url":"{src}","width":64,"height":48}},"created_at":"2026-01-01T00:00:00Z"}}"#
        ),
    );
    let r = generate(&s.proxy, r#"{"prompt":"a cat"}"#, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.h("content-type").starts_with("application/json"));
    assert_content_length(&r);
    let v = r.json();
    let img = &v["image"];
    let h = hosted(&img["url"], &s.proxy.base(), "anonymous", "png");
    assert_eq!(img["replicate_url"], src.as_str());
    assert_eq!(img["size_bytes"], fixtures::PNG.len());
    let at = img["hosted_at"].as_str().expect("hosted_at string");
    assert!(is_rfc3339(at), "hosted_at {at:?} is not RFC 3339");
    assert_eq!(
        (img["width"].clone(), img["height"].clone()),
        (json!(64), json!(48))
    );
    assert_eq!(
        img.as_object().unwrap().len(),
        6,
        "url, width, height + 3 siblings: {img}"
    );
    assert_eq!(v["id"], "p1");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["created_at"], "2026-01-01T00:00:00Z");
    let text = r.text();
    assert_in_order(
        &text,
        &[r#""id""#, r#""status""#, r#""image""#, r#""created_at""#],
    );
    assert_in_order(&text, &[r#""url""#, r#""width""#, r#""height""#]);

    let got = get_hosted(&s.proxy, &h, &[]).await;
    assert_eq!(got.status, 200);
    assert_same_bytes(&got.body, fixtures::PNG, "hosted bytes");
    assert_eq!(got.h("content-type"), "image/png");
    assert_eq!(s.host.hits("/pbxt/abc/out-0.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_of_url_strings_flux_schnell_shape() {
    let s = stands(&[]).await;
    let a = s
        .host
        .add_url("/xezq/p1/out-0.webp", fixtures::WEBP, "image/webp");
    let b = s
        .host
        .add_url("/xezq/p1/out-1.jpg", fixtures::JPEG, "image/jpeg");
    answer_json(
        &s.api,
        &format!(r#"{{"id":"p1","status":"succeeded","output":["{a}","{b}"]}}"#),
    );
    let r = generate(&s.proxy, r#"{"prompt":"two cats","num_outputs":2}"#, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_content_length(&r);
    let v = r.json();
    assert_eq!(
        v.as_object().unwrap().len(),
        3,
        "no members added at top level: {v}"
    );
    let out = v["output"].as_array().expect("output stays an array");
    assert_eq!(out.len(), 2);
    let ha = hosted(&out[0], &s.proxy.base(), "anonymous", "webp");
    let hb = hosted(&out[1], &s.proxy.base(), "anonymous", "jpg");
    assert_ne!(ha.image_id, hb.image_id);
    assert!(
        !r.text().contains("replicate_url"),
        "siblings only next to `url` members"
    );
    assert_in_order(&r.text(), &[r#""id""#, r#""status""#, r#""output""#]);
    for (h, bytes, ct) in [
        (&ha, fixtures::WEBP, "image/webp"),
        (&hb, fixtures::JPEG, "image/jpeg"),
    ] {
        let got = get_hosted(&s.proxy, h, &[]).await;
        assert_eq!(got.status, 200);
        assert_same_bytes(&got.body, bytes, ct);
        assert_eq!(got.h("content-type"), ct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_objects_and_single_string_output() {
    let s = stands(&[]).await;
    let deep = s
        .host
        .add_url("/pbxt/n/deep.png", fixtures::PNG, "image/png");
    let preview = s
        .host
        .add_url("/pbxt/n/preview.gif", fixtures::GIF, "image/gif");
    let single = s
        .host
        .add_url("/pbxt/n/single.jpg", fixtures::JPEG, "image/jpeg");
    let raw = format!(
        r#"{{"data":{{"results":[{{"images":[{{"url":"{deep}","seed":1}}]}},{{"meta":{{"preview":"{preview}","n":null,"ok":true}}}}]}},"output":"{single}","urls":{{"get":"https://api.replicate.com/v1/predictions/p1"}},"metrics":{{"predict_time":1.25}}}}"#
    );
    answer_json(&s.api, &raw);
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_content_length(&r);
    let v = r.json();
    let img = &v["data"]["results"][0]["images"][0];
    let h = hosted(&img["url"], &s.proxy.base(), "anonymous", "png");
    assert_eq!(img["replicate_url"], deep.as_str());
    assert_eq!(img["size_bytes"], fixtures::PNG.len());
    assert_eq!(img["seed"], 1);
    let meta = &v["data"]["results"][1]["meta"];
    hosted(&meta["preview"], &s.proxy.base(), "anonymous", "gif");
    assert_eq!(
        (meta["n"].clone(), meta["ok"].clone()),
        (json!(null), json!(true))
    );
    assert!(meta.get("replicate_url").is_none());
    hosted(&v["output"], &s.proxy.base(), "anonymous", "jpg");
    assert_eq!(
        v["urls"]["get"],
        "https://api.replicate.com/v1/predictions/p1"
    );
    assert_eq!(v["metrics"]["predict_time"], 1.25);
    assert_in_order(
        &r.text(),
        &[r#""data""#, r#""output""#, r#""urls""#, r#""metrics""#],
    );
    assert_same_bytes(
        &get_hosted(&s.proxy, &h, &[]).await.body,
        fixtures::PNG,
        "deep image",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_order_is_kept() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/o/out-0.png", fixtures::PNG, "image/png");
    answer_json(
        &s.api,
        &format!(
            r#"{{"zeta":1,"alpha":{{"url":"{src}","zz":0,"aa":1}},"mid":[3,2,1],"beta":"b","Aardvark":null}}"#
        ),
    );
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert_in_order(
        &text,
        &[
            r#""zeta""#,
            r#""alpha""#,
            r#""mid""#,
            r#""beta""#,
            r#""Aardvark""#,
        ],
    );
    assert_in_order(&text, &[r#""url""#, r#""zz""#, r#""aa""#]);
    assert_eq!(r.json()["mid"], json!([3, 2, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_containing_urls_and_foreign_hosts_are_untouched() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/u/real.png", fixtures::PNG, "image/png");
    let inside = s
        .host
        .add_url("/pbxt/u/inside.png", fixtures::PNG, "image/png");
    s.host
        .add("/pbxt/u/foreign.png", fixtures::PNG, "image/png");
    // Same server, but `localhost:PORT` is not the listed `127.0.0.1:PORT`.
    let port = s.host.addr().rsplit(':').next().unwrap().to_string();
    let foreign = format!("http://localhost:{port}/pbxt/u/foreign.png");
    let prompt = format!("like {inside} but bluer");
    let body = json!({
        "output": [src],
        "prompt": prompt,
        "quoted": format!(" {inside}"),
        "foreign": {"url": foreign},
        "other": "https://example.com/cat.png",
        "ftp": format!("ftp://{}/pbxt/u/inside.png", s.host.addr()),
        "n": 3, "flag": false, "nothing": null, "list": []
    });
    answer_json(&s.api, &body.to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    hosted(&v["output"][0], &s.proxy.base(), "anonymous", "png");
    for key in [
        "prompt", "quoted", "foreign", "other", "ftp", "n", "flag", "nothing", "list",
    ] {
        assert_eq!(v[key], body[key], "{key} must be untouched");
    }
    assert_eq!(s.host.hits("/pbxt/u/inside.png"), 0);
    assert_eq!(s.host.hits("/pbxt/u/foreign.png"), 0);
    assert_eq!(s.host.hits("/pbxt/u/real.png"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sources_need_the_opt_in() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let proxy =
        Proxy::start(ProxyOptions::new(&api.url()).env("REPLICATE_HOSTS", &host.addr())).await;
    let src = host.add_url("/pbxt/h/out-0.png", fixtures::PNG, "image/png");
    let body = json!({"output": [src], "image": {"url": src}});
    answer_json(&api, &body.to_string());
    let r = generate(&proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), body, "http:// sources are left alone by default");
    assert_eq!(host.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_content_type_passes_through_byte_for_byte() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/t/out-0.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{"output":["{src}"]}}"#);
    for ct in [
        "text/plain",
        "text/html; charset=utf-8",
        "application/octet-stream",
    ] {
        s.api.set_generate_response(200, ct, raw.clone());
        let r = generate(&s.proxy, "{}", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.h("content-type"), ct);
        assert_eq!(r.text(), raw, "{ct} body must pass byte for byte");
    }
    assert_eq!(s.host.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_json_passes_through_byte_for_byte() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/e/out-0.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{ "error" : "nope", "output" : ["{src}"] }}"#);
    for status in [400u16, 404, 422, 500, 503] {
        s.api
            .set_generate_response(status, "application/json", raw.clone());
        let r = generate(&s.proxy, "{}", &[]).await;
        assert_eq!(r.status, status);
        assert_eq!(
            r.text(),
            raw,
            "a {status} JSON body must pass byte for byte"
        );
    }
    assert_eq!(s.host.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_rewrite_limit_passes_through() {
    let s = stands(&[("IMAGE_REWRITE_MAX_BODY_BYTES", "4096")]).await;
    let big_src = s
        .host
        .add_url("/pbxt/l/big.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{"output":["{big_src}"],"pad":"{}"}}"#, "x".repeat(8000));
    answer_json(&s.api, &raw);
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), raw, "over the limit: byte for byte");
    assert_eq!(s.host.hits("/pbxt/l/big.png"), 0);

    // Under the limit the same shape is rewritten.
    let small_src = s
        .host
        .add_url("/pbxt/l/small.png", fixtures::PNG, "image/png");
    answer_json(
        &s.api,
        &format!(
            r#"{{"output":["{small_src}"],"pad":"{}"}}"#,
            "x".repeat(1000)
        ),
    );
    let r = generate(&s.proxy, "{}", &[]).await;
    hosted(&r.json()["output"][0], &s.proxy.base(), "anonymous", "png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_encoded_upstream_body_is_rewritten() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/g/out-0.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{"id":"p1","output":["{src}"],"image":{{"url":"{src}"}}}}"#);
    s.api.set_response(GEN, Canned::json_text(&raw).gzip());
    // The client asks for no encoding, so it must get plain JSON back.
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    let ce = r.h("content-encoding");
    assert!(
        ce.is_empty() || ce == "identity",
        "client sent no Accept-Encoding, got {ce:?}"
    );
    assert_content_length(&r);
    let v = r.json();
    let h = hosted(&v["output"][0], &s.proxy.base(), "anonymous", "png");
    assert_eq!(v["image"]["replicate_url"], src.as_str());
    assert_same_bytes(
        &get_hosted(&s.proxy, &h, &[]).await.body,
        fixtures::PNG,
        "gzip route image",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_request_reaches_upstream_unchanged() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/r/out-0.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &format!(r#"{{"output":["{src}"]}}"#));
    let body = r#"{"prompt":"a cat","user_id":"alice","num_outputs":1}"#;
    let r = fetch(
        client()
            .post(s.proxy.url("/v1/images/generate?model=flux-schnell&sync=1"))
            .header("content-type", "application/json")
            .header("x-custom", "kept")
            .header("authorization", "Bearer t0ken")
            .body(body),
    )
    .await;
    assert_eq!(r.status, 200);
    hosted(&r.json()["output"][0], &s.proxy.base(), "alice", "png");
    let rec = s.api.last_request().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/images/generate?model=flux-schnell&sync=1");
    assert_eq!(rec.header("x-custom"), Some("kept"));
    assert_eq!(rec.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(rec.header("content-type"), Some("application/json"));
    assert_eq!(rec.body.as_ref(), body.as_bytes());
}

/// Degrade, never drop: a rewrite that fails, or even panics, answers with
/// Studio API's original response, byte for byte, counted and logged with
/// the request id. The fault is forced through the real binary's test hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_panicking_rewrite_returns_the_original_body() {
    for (fault, reason) in [("rewrite_panic", "panic"), ("rewrite_error", "injected")] {
        let s = stands(&[("PERMAPROXY_TEST_FAULTS", fault)]).await;
        let src = s
            .host
            .add_url("/pbxt/dg/out-0.png", fixtures::PNG, "image/png");
        let raw = format!(r#"{{"id":"p1",  "output":["{src}"], "n": 1.50 }}"#);
        answer_json(&s.api, &raw);
        let r = generate(&s.proxy, "{}", &[("x-request-id", "req-degrade-1")]).await;
        assert_eq!(r.status, 200, "{fault}: {}", r.text());
        assert_eq!(r.text(), raw, "{fault}: the original bytes");
        assert_eq!(r.h("content-length"), raw.len().to_string());
        assert_eq!(
            s.proxy
                .metric(&format!(
                    r#"permaproxy_rewrite_failures_total{{reason="{reason}"}}"#
                ))
                .await,
            1.0,
            "{fault}"
        );
        let log = s.proxy.log_text();
        assert!(
            log.lines().any(|l| l.contains("\"level\":\"ERROR\"")
                && l.contains("rewrite failed")
                && l.contains("req-degrade-1")),
            "{fault}: an error line with the request id"
        );
        // The proxy is still up and serving.
        let again = generate(&s.proxy, "{}", &[]).await;
        assert_eq!(again.text(), raw);
    }
}

/// A poisoned input: a body that names a source host but is not JSON. The
/// original goes out unchanged, and the failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_sent_unchanged() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/nj/out-0.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{"output": ["{src}"], broken"#);
    answer_json(&s.api, &raw);
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), raw);
    assert_eq!(
        s.proxy
            .metric(r#"permaproxy_rewrite_failures_total{reason="not_json"}"#)
            .await,
        1.0
    );
    assert_eq!(s.host.hits("/pbxt/nj/out-0.png"), 0, "nothing downloaded");
}

/// Finding 10: the number of sources per response was unbounded (and their
/// dedupe quadratic). Past IMAGE_MAX_SOURCES_PER_RESPONSE distinct sources,
/// the rest keep their URLs and are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_10_sources_past_the_cap_keep_their_urls() {
    let s = stands(&[("IMAGE_MAX_SOURCES_PER_RESPONSE", "3")]).await;
    let srcs: Vec<String> = (0..5)
        .map(|i| {
            s.host.add_url(
                &format!("/cap/{i}.png"),
                fixtures::unique_png(1000 + i),
                "image/png",
            )
        })
        .collect();
    // The first source twice: duplicates count once.
    let mut output = vec![srcs[0].clone()];
    output.extend(srcs.iter().cloned());
    answer_json(&s.api, &json!({ "output": output }).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json()["output"].clone();
    for i in [0, 1, 2, 3] {
        hosted(&out[i], &s.proxy.base(), "anonymous", "png");
    }
    assert_eq!(out[0], out[1], "one source, one hosted URL");
    assert_eq!(out[4], srcs[3].as_str(), "past the cap: kept");
    assert_eq!(out[5], srcs[4].as_str(), "past the cap: kept");
    assert_eq!(
        s.proxy
            .metric(r#"permaproxy_rewritten_urls_total{result="over_cap"}"#)
            .await,
        2.0
    );
    assert_eq!(s.host.hits("/cap/3.png") + s.host.hits("/cap/4.png"), 0);
}
