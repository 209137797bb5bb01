//! Everything that is not a hosted image goes to UPSTREAM_URL unchanged.

use crate::common::*;
use crate::{stands, GEN};

const FIVE_MB: usize = 5 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_method_path_query_headers_and_body() {
    let s = stands(&[]).await;
    let target = "/echo/some/path?a=1&b=two%20words&c=%2F&a=2&empty=";
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let body = format!("{{\"method\":\"{method}\"}}");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = fetch(
            client()
                .request(m, s.proxy.url(target))
                .header("x-custom", "hello world")
                .header("x-multi", "one")
                .header("x-multi", "two")
                .header("authorization", "Bearer secret-token")
                .header("cookie", "session=abc; theme=dark")
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.h("x-echo-method"), method);
        assert_eq!(
            r.h("x-echo-path"),
            target,
            "{method}: path and query reach upstream as sent"
        );
        assert_eq!(r.h("x-echo-h-x-custom"), "hello world");
        assert_eq!(
            r.all("x-echo-h-x-multi"),
            ["one", "two"],
            "{method}: repeated headers kept"
        );
        assert_eq!(r.h("x-echo-h-authorization"), "Bearer secret-token");
        assert_eq!(r.h("x-echo-h-cookie"), "session=abc; theme=dark");
        assert_eq!(
            r.h("content-type"),
            "application/json",
            "upstream response header kept"
        );
        assert_eq!(r.text(), body, "{method}: body both ways");
    }
    let rec = s.api.last_request().unwrap();
    assert_eq!(rec.method, "OPTIONS");
    assert_eq!(rec.path, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_upstream_statuses_as_is() {
    let s = stands(&[]).await;
    for status in [
        201u16, 202, 400, 401, 403, 404, 409, 418, 422, 429, 500, 502, 503,
    ] {
        let body = format!("upstream says {status}");
        let r = fetch(
            client()
                .post(s.proxy.url(&format!("/echo/status?status={status}")))
                .header("content-type", "text/plain")
                .body(body.clone()),
        )
        .await;
        assert_eq!(r.status, status);
        assert_eq!(r.text(), body, "body of a {status} passes through");
        assert_eq!(r.h("x-echo-method"), "POST");
    }
    // 204 carries no body.
    let r = fetch(client().delete(s.proxy.url("/echo/x?status=204"))).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // A non-image route answered 404 by upstream stays upstream's 404.
    let r = fetch(client().get(s.proxy.url("/v1/unknown/route"))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route");
    assert_eq!(s.api.count("/v1/unknown/route"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabyte_request_body_arrives_byte_exact() {
    let s = stands(&[]).await;
    let body = big_bytes(FIVE_MB, 9);
    let r = fetch(
        client()
            .post(s.proxy.url("/echo/upload"))
            .header("content-type", "application/octet-stream")
            .body(body.clone()),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &body, "echoed 5 MB body");
    assert_same_bytes(
        &s.api.last_request().unwrap().body,
        &body,
        "5 MB body as upstream received it",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabyte_response_body_arrives_byte_exact() {
    let s = stands(&[]).await;
    let r = fetch(client().get(s.proxy.url(&format!("/big?bytes={FIVE_MB}")))).await;
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &big_bytes(FIVE_MB, 0), "5 MB response");
    if !r.h("content-length").is_empty() {
        assert_eq!(r.h("content-length"), FIVE_MB.to_string());
    }
    assert_eq!(r.h("content-type"), "application/octet-stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_non_json_answer_on_a_rewrite_route_passes_through() {
    let s = stands(&[]).await;
    let body = big_bytes(FIVE_MB, 4);
    s.api
        .set_generate_response(200, "application/octet-stream", body.clone());
    let r = fetch(client().post(s.proxy.url(GEN)).body("{}")).await;
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &body, "5 MB octet-stream on the generate route");
    assert_eq!(s.host.total_hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_502_json_and_the_proxy_recovers() {
    // Nothing listens on this port yet.
    let upstream_addr = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::start(ProxyOptions::new(&format!("http://{upstream_addr}"))).await;

    for _ in 0..3 {
        for (method, path) in [("GET", "/echo/x?y=1"), ("POST", GEN)] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = fetch(client().request(m, proxy.url(path)).body("{}")).await;
            assert_eq!(r.status, 502, "{method} {path} with a dead upstream");
            assert!(
                r.h("content-type").starts_with("application/json"),
                "502 content-type {:?}",
                r.h("content-type")
            );
            let v = r.json();
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "502 body needs an error message: {v}"
            );
        }
    }
    let health = fetch(client().get(format!("{}/healthz", proxy.admin()))).await;
    assert_eq!(health.status, 200, "still healthy after upstream errors");

    // The upstream comes up: the same proxy serves again.
    let _api = StudioApi::start_on(&upstream_addr).await;
    let url = proxy.url("/echo/back?x=1");
    assert!(
        wait_until(secs(15), || async {
            fetch(client().get(&url)).await.status == 200
        })
        .await,
        "proxy did not recover once the upstream was up"
    );
    let r = fetch(client().get(&url)).await;
    assert_eq!(r.h("x-echo-path"), "/echo/back?x=1");
}
