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

/// A raw request over a fresh connection; `None` when the proxy closed the
/// connection without answering at all.
async fn raw_answer(addr: &str, request: &str) -> Option<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(secs(20), stream.read_to_end(&mut buf)).await;
    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
        Some(raw_request_parse(&buf))
    } else {
        None
    }
}

fn assert_bad_framing(r: Option<RawResponse>, what: &str) {
    let r = r.unwrap_or_else(|| panic!("{what}: the connection closed with no answer"));
    assert_eq!(
        r.status,
        400,
        "{what}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: {:?}",
        r.headers
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON error body");
    assert_eq!(v["code"], "bad_request", "{what}: {v}");
}

/// Finding 15: both Content-Length and chunked on a rewrite route got no
/// answer while the upstream received a broken chunked body; an invalid chunk
/// size got no answer on any route. Now: 400 with the JSON error, and nothing
/// whose framing the proxy did not parse reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_15_broken_request_framing_gets_400_and_is_never_forwarded() {
    let s = stands(&[]).await;
    let addr = s.proxy.addr();
    let both = format!(
        "POST {GEN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n{{\"prompt\":1}}"
    );
    assert_bad_framing(
        raw_answer(&addr, &both).await,
        "CL and TE on a rewrite route",
    );
    for path in [GEN, "/echo/upload"] {
        let bad_chunk = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        );
        assert_bad_framing(
            raw_answer(&addr, &bad_chunk).await,
            &format!("invalid chunk size on {path}"),
        );
    }
    let broken: Vec<_> = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path == GEN || r.path.starts_with("/echo"))
        .collect();
    assert!(broken.is_empty(), "the upstream received {broken:?}");
    // A well-framed chunked body still goes through, on both kinds of route.
    s.api.set_generate_json(&serde_json::json!({"ok": true}));
    for path in [GEN, "/echo/upload"] {
        let good = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{{\"a\":\r\n2\r\n1}}\r\n0\r\n\r\n"
        );
        let r = raw_answer(&addr, &good).await.expect("an answer");
        assert_eq!(r.status, 200, "{path}");
        let rec = s.api.last_request().unwrap();
        assert_eq!(
            rec.body.as_ref(),
            b"{\"a\":1}",
            "{path}: the body as the client meant it"
        );
    }
}

/// A WebSocket echo server standing in for Studio API: it accepts upgrades
/// on any path and sends every text or binary message back.
async fn ws_echo_upstream() -> (String, tokio::task::JoinHandle<()>) {
    use futures::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), task)
}

/// Finding 14: under a broad rewrite prefix the rewrite forwarder dropped
/// the upgrade, so a WebSocket got a 404 from the upstream. An upgrade takes
/// the pass-through path whatever its route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_14_websocket_upgrade_under_a_rewrite_prefix() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (upstream, _server) = ws_echo_upstream().await;
    let proxy =
        Proxy::start(ProxyOptions::new(&upstream).env("IMAGE_REWRITE_PATHS", "/v1/*")).await;
    for path in ["/v1/realtime/socket", "/other/socket"] {
        let url = format!("ws://{}{path}", proxy.addr());
        let (mut ws, resp) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("{path}: WebSocket handshake through the proxy: {e}"));
        assert_eq!(resp.status().as_u16(), 101, "{path}");
        for text in ["hello", "second message with ü"] {
            ws.send(Message::text(text)).await.unwrap();
            let back = ws.next().await.expect("an echo").expect("a frame");
            assert_eq!(back.into_text().unwrap().as_str(), text, "{path}");
        }
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255], "{path}");
        ws.close(None).await.ok();
    }
}
