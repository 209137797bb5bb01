//! User ids, stable ids, base URLs, settings, signals and the admin listener.

use crate::common::*;
use crate::{answer_json, assert_image_response, generate, get_hosted, hosted, stands};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_source_url_gives_one_hosted_url_and_one_download() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/s/out-0.png", fixtures::PNG, "image/png");
    answer_json(
        &s.api,
        &json!({"output": [src, src], "image": {"url": src}}).to_string(),
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = generate(&s.proxy, "{}", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        for u in [&v["output"][0], &v["output"][1], &v["image"]["url"]] {
            hosted(u, &s.proxy.base(), "anonymous", "png");
            seen.push(u.as_str().unwrap().to_string());
        }
    }
    assert!(
        seen.iter().all(|u| *u == seen[0]),
        "one source, one hosted URL: {seen:?}"
    );
    assert_eq!(
        s.host.hits("/pbxt/s/out-0.png"),
        1,
        "downloaded exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_id_is_sha256_of_the_source_url() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/id/out-0.webp", fixtures::WEBP, "image/webp");
    answer_json(&s.api, &json!({"output": src}).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    let h = hosted(&r.json()["output"], &s.proxy.base(), "anonymous", "webp");
    assert_eq!(h.image_id, expected_image_id(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_from_header_then_body_then_anonymous() {
    let s = stands(&[]).await;
    let long = "a".repeat(200);
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![("x-user-id", "user123")], "{}", Some("user123")),
        (vec![], r#"{"prompt":"x","user_id":"alice"}"#, Some("alice")),
        (
            vec![],
            r#"{"prompt":"x","userId":"bob.b-2_c"}"#,
            Some("bob.b-2_c"),
        ),
        (
            vec![("x-user-id", "hdr-user")],
            r#"{"user_id":"body-user"}"#,
            Some("hdr-user"),
        ),
        (vec![], r#"{"prompt":"x"}"#, Some("anonymous")),
        (vec![], "not json at all", Some("anonymous")),
        (
            vec![],
            r#"{"nested":{"user_id":"deep"}}"#,
            Some("anonymous"),
        ),
        (vec![("x-user-id", "../etc")], "{}", None),
        (vec![("x-user-id", "a/b")], "{}", None),
        (vec![], r#"{"user_id":".."}"#, None),
        (vec![], r#"{"user_id":"."}"#, None),
        (vec![], r#"{"user_id":"has space"}"#, None),
        (vec![("x-user-id", long.as_str())], "{}", None),
    ];
    for (i, (headers, body, want)) in cases.iter().enumerate() {
        let path = format!("/pbxt/user/{i}.png");
        let src = s
            .host
            .add_url(&path, fixtures::unique_png(i as u64), "image/png");
        answer_json(&s.api, &json!({"output": [src]}).to_string());
        let r = generate(&s.proxy, body, headers).await;
        assert_eq!(r.status, 200, "case {i}: {}", r.text());
        let url = r.json()["output"][0].as_str().unwrap().to_string();
        let h = parse_hosted(&url).unwrap_or_else(|| panic!("case {i}: not hosted: {url}"));
        match want {
            Some(user) => assert_eq!(h.user, *user, "case {i}"),
            None => {
                assert!(
                    is_safe_user_segment(&h.user),
                    "case {i}: unsafe user segment {:?}",
                    h.user
                );
                assert!(
                    !headers.iter().any(|(_, v)| *v == h.user),
                    "case {i}: hostile id kept"
                );
                assert!(
                    !body.contains(&format!("\"{}\"", h.user)),
                    "case {i}: hostile id kept"
                );
            }
        }
        let got = get_hosted(&s.proxy, &h, &[]).await;
        assert_same_bytes(
            &got.body,
            &fixtures::unique_png(i as u64),
            &format!("case {i}"),
        );
        // The request itself reached upstream untouched.
        let rec = s.api.last_request().unwrap();
        assert_eq!(rec.body.as_ref(), body.as_bytes(), "case {i}");
    }
    // A hostile id maps to the same safe id every time.
    let src = s
        .host
        .add_url("/pbxt/user/again.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let a = generate(&s.proxy, "{}", &[("x-user-id", "../etc")])
        .await
        .json();
    let b = parse_hosted(a["output"][0].as_str().unwrap()).unwrap();
    let src2 = s
        .host
        .add_url("/pbxt/user/again2.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &json!({"output": [src2]}).to_string());
    let c = generate(&s.proxy, "{}", &[("x-user-id", "../etc")])
        .await
        .json();
    assert_eq!(
        parse_hosted(c["output"][0].as_str().unwrap()).unwrap().user,
        b.user
    );
    // Nothing was written outside the storage folder's user directories.
    for f in files_under(s.proxy.storage_path()) {
        assert!(f.starts_with(s.proxy.storage_path()));
    }
    assert!(!s.proxy.dir().join("etc").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_base_url_and_forwarded_host() {
    let s = stands(&[("PUBLIC_BASE_URL", "https://images.example.test/")]).await;
    let src = s
        .host
        .add_url("/pbxt/b/out-0.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    assert!(
        url.starts_with("https://images.example.test/v1/images/hosted/anonymous/img_"),
        "{url}"
    );
    let h = hosted(
        &r.json()["output"][0],
        "https://images.example.test",
        "anonymous",
        "png",
    );
    assert_image_response(
        &get_hosted(&s.proxy, &h, &[]).await,
        fixtures::PNG,
        "image/png",
    );

    // Without PUBLIC_BASE_URL: Host and X-Forwarded-Proto.
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/b/out-1.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let r = generate(
        &s.proxy,
        "{}",
        &[("host", "api.example.test"), ("x-forwarded-proto", "https")],
    )
    .await;
    hosted(
        &r.json()["output"][0],
        "https://api.example.test",
        "anonymous",
        "png",
    );
    let r = generate(&s.proxy, "{}", &[("host", "api.example.test:8443")]).await;
    hosted(
        &r.json()["output"][0],
        "http://api.example.test:8443",
        "anonymous",
        "png",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosting_disabled_is_a_pure_passthrough() {
    let s = stands(&[("IMAGE_HOSTING_ENABLED", "false")]).await;
    let src = s
        .host
        .add_url("/pbxt/off/out-0.png", fixtures::PNG, "image/png");
    let raw = format!(r#"{{"output":["{src}"],"image":{{"url":"{src}"}}}}"#);
    answer_json(&s.api, &raw);
    for _ in 0..2 {
        let r = generate(&s.proxy, r#"{"user_id":"alice"}"#, &[("x-user-id", "bob")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), raw, "byte for byte");
    }
    let r = fetch(client().get(format!("{}/healthz", s.proxy.admin()))).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.host.total_hits(), 0, "nothing fetched with hosting off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_timeout_answers_then_finishes_in_background() {
    let s = stands(&[("IMAGE_PERSIST_TIMEOUT_MS", "300")]).await;
    let src = s
        .host
        .add_url("/pbxt/slow/out-0.png", fixtures::PNG, "image/png");
    s.host.slow("/pbxt/slow/out-0.png", secs(3));
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200);
    let h = hosted(&r.json()["output"][0], &s.proxy.base(), "anonymous", "png");
    let (p, hh) = (&s.proxy, &h);
    assert!(
        wait_until(secs(30), || async move {
            get_hosted(p, hh, &[]).await.status == 200
        })
        .await,
        "the background download never landed"
    );
    s.host.expire("/pbxt/slow/out-0.png");
    assert_image_response(
        &get_hosted(&s.proxy, &h, &[]).await,
        fixtures::PNG,
        "image/png",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_exit_non_zero_naming_the_setting() {
    let cases = [
        ("IMAGE_PERSIST_MODE", "sometimes"),
        ("UPSTREAM_URL", "notaurl"),
        ("IMAGE_MAX_BYTES", "lots"),
        ("IMAGE_HOSTING_ENABLED", "maybe"),
        ("IMAGE_REWRITE_MAX_BODY_BYTES", "-1"),
        ("LISTEN_ADDR", "not-an-address"),
    ];
    for (name, value) in cases {
        let (code, stderr) = Proxy::run_expect_fail(&[(name, value)]).await;
        assert_ne!(code, 0);
        assert!(
            stderr.lines().any(|l| l.contains(name)),
            "{name}={value}: stderr must name the setting, got:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_stop_it() {
    let api = StudioApi::start().await;
    for sig in ["TERM", "INT"] {
        let mut proxy = Proxy::start(ProxyOptions::new(&api.url())).await;
        assert_eq!(fetch(client().get(proxy.url("/echo/x"))).await.status, 200);
        if sig == "TERM" {
            proxy.sigterm();
        } else {
            proxy.sigint();
        }
        let status = proxy.wait_exit(secs(20)).await;
        assert!(status.is_some(), "SIG{sig}: still running after 20 s");
        assert!(
            status.unwrap().success(),
            "SIG{sig}: exit status {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_health_and_metrics() {
    let s = stands(&[]).await;
    let src = s
        .host
        .add_url("/pbxt/m/out-0.png", fixtures::PNG, "image/png");
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    let h = hosted(&r.json()["output"][0], &s.proxy.base(), "anonymous", "png");
    assert_eq!(get_hosted(&s.proxy, &h, &[]).await.status, 200);

    assert_eq!(
        fetch(client().get(format!("{}/healthz", s.proxy.admin())))
            .await
            .status,
        200
    );
    let text = s.proxy.metrics().await;
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(!names.is_empty(), "no samples in /metrics");
    assert!(
        names.iter().any(|l| l.starts_with("permaproxy_")),
        "no permaproxy_ metrics:\n{text}"
    );
    // The public listener forwards /metrics and /healthz like any other path.
    for path in ["/metrics", "/healthz"] {
        let r = fetch(client().get(s.proxy.url(path))).await;
        assert_eq!(
            r.text(),
            "no route",
            "{path} on the public port goes upstream"
        );
        assert_eq!(s.api.count(path), 1);
    }
}
