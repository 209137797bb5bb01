//! Self-tests of the test support library: the stand-in servers, the byte
//! helpers and the metrics parser, without starting permaproxy.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn crc32_and_gzip_framing() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32_update(crc32(b"1234"), b"56789"), 0xCBF4_3926);
    let data = big_bytes(200_000, 7);
    let gz = gzip(&data);
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    // 4 stored blocks of at most 65535 bytes, 5 bytes of header each.
    assert_eq!(gz.len(), 10 + data.len() + 4 * 5 + 8);
    assert_eq!(&gz[gz.len() - 4..], &200_000u32.to_le_bytes());
    assert_eq!(big_bytes(1000, 0), big_bytes(1000, 0));
    assert_ne!(big_bytes(1000, 0), big_bytes(1000, 1));
}

#[test]
fn fixtures_have_the_right_magic() {
    assert_eq!(&fixtures::PNG[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&fixtures::JPEG[..3], &[0xff, 0xd8, 0xff]);
    assert_eq!(&fixtures::WEBP[..4], b"RIFF");
    assert_eq!(&fixtures::WEBP[8..12], b"WEBP");
    assert_eq!(&fixtures::GIF[..4], b"GIF8");
    assert_eq!(&fixtures::AVIF[4..12], b"ftypavif");
    for (bytes, _, _) in fixtures::all() {
        assert!(bytes.len() < 20_000);
    }
    let big = fixtures::large_png(3_000_000, 1);
    assert!(
        big.len() > 2_900_000 && big.len() < 3_100_000,
        "{}",
        big.len()
    );
    assert_eq!(&big[..8], b"\x89PNG\r\n\x1a\n");
    assert_ne!(fixtures::unique_png(1), fixtures::unique_png(2));
    let bomb = fixtures::png_header_with_dims(100_000, 100_000);
    assert!(bomb.len() < 300);
    assert_eq!(&bomb[16..24], &[0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0]);
}

#[test]
fn parses_hosted_urls() {
    let h = parse_hosted(
        "https://api.example.com/v1/images/hosted/user123/img_0123456789abcdef01234567.png",
    )
    .unwrap();
    assert_eq!(h.base, "https://api.example.com");
    assert_eq!(h.user, "user123");
    assert!(is_image_id(&h.image_id));
    assert_eq!(h.ext, "png");
    assert_eq!(
        h.path,
        "/v1/images/hosted/user123/img_0123456789abcdef01234567.png"
    );
    assert!(parse_hosted("https://replicate.delivery/pbxt/x/out-0.png").is_none());
    assert!(is_safe_user_segment("user-1_2.x"));
    assert!(!is_safe_user_segment(".."));
    assert!(!is_safe_user_segment("../etc"));
    assert!(!is_safe_user_segment(&"a".repeat(129)));
    assert_eq!(expected_image_id("x").len(), 28);
}

#[test]
fn parses_prometheus_text() {
    let text =
        "# HELP permaproxy_downloads_total Downloads.\n# TYPE permaproxy_downloads_total counter\n\
        permaproxy_downloads_total{outcome=\"ok\",source=\"generate\"} 3\n\
        permaproxy_downloads_total{outcome=\"failed\",source=\"generate\"} 2\n\
        permaproxy_stored_bytes 1.5e3\n\
        permaproxy_label_escape{path=\"a\\\"b,c=d\"} 1\n";
    assert_eq!(
        metrics::metric_value(text, "permaproxy_downloads_total"),
        Some(5.0)
    );
    assert_eq!(
        metrics::metric_value(text, "permaproxy_downloads_total{outcome=\"ok\"}"),
        Some(3.0)
    );
    assert_eq!(
        metrics::metric_value(
            text,
            "permaproxy_downloads_total{source=\"generate\",outcome=\"failed\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metrics::metric_value(text, "permaproxy_stored_bytes"),
        Some(1500.0)
    );
    assert_eq!(
        metrics::metric_value(text, "permaproxy_label_escape{path=\"a\\\"b,c=d\"}"),
        Some(1.0)
    );
    assert_eq!(metrics::metric_value(text, "permaproxy_missing"), None);
}

#[tokio::test]
async fn file_host_serves_counts_and_expires() {
    let host = FileHost::start().await;
    let url = host.add_url("/pbxt/a/out-0.png", fixtures::PNG, "image/png");
    assert!(url.starts_with(&format!("http://{}/", host.addr())));
    let c = client();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(
        header(&r, "content-length"),
        fixtures::PNG.len().to_string()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), fixtures::PNG);
    assert_eq!(c.head(&url).send().await.unwrap().status(), 200);
    assert_eq!(host.hits("/pbxt/a/out-0.png"), 1, "HEAD is not a GET");
    assert_eq!(host.hits("pbxt/a/out-0.png"), 1, "leading slash optional");
    host.expire("/pbxt/a/out-0.png");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(host.hits("/pbxt/a/out-0.png"), 2);
    assert_eq!(
        c.get(host.url("/missing")).send().await.unwrap().status(),
        404
    );
    assert_eq!(host.requests().len(), 4);
}

#[tokio::test]
async fn file_host_faults() {
    let host = FileHost::start().await;
    let c = client();

    let url = host.add_url("/f.png", fixtures::PNG, "image/png");
    host.fail_first("/f.png", 2, 503);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(host.hits("/f.png"), 3);

    let url = host.add_url("/s.png", fixtures::PNG, "image/png");
    host.slow("/s.png", Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let big = fixtures::large_png(200_000, 3);
    let url = host.add_url("/t.png", big.clone(), "image/png");
    host.truncate("/t.png", 1000);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "content-length"), big.len().to_string());
    assert!(r.bytes().await.is_err(), "truncated body must fail to read");
    let raw = raw_get(&host.addr(), "/t.png").await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, &big[..1000], "exactly the first n bytes arrive");
    host.clear_faults("/t.png");
    assert_eq!(
        c.get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        big.len()
    );

    host.redirect("/r.png", "http://127.0.0.1:1/elsewhere.png");
    let r = c.get(host.url("/r.png")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(header(&r, "location"), "http://127.0.0.1:1/elsewhere.png");

    let url = host.add_url("/page.png", fixtures::HTML, "text/html");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "text/html");
    let url = host.add_url("/noct", fixtures::PNG, "");
    assert!(c
        .get(&url)
        .send()
        .await
        .unwrap()
        .headers()
        .get("content-type")
        .is_none());
}

#[tokio::test]
async fn studio_api_generate_and_record() {
    let api = StudioApi::start().await;
    let c = client();
    let r = c
        .post(format!("{}/v1/images/generate", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{}");

    api.set_generate_response(201, "application/json", r#"{"output":["x"]}"#);
    let r = c
        .post(format!("{}/v1/images/generate?sync=1", api.url()))
        .header("x-user-id", "u1")
        .body(r#"{"prompt":"cat"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "content-type"), "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"output":["x"]}"#);
    let last = api.last_request().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1/images/generate?sync=1");
    assert_eq!(last.header("X-User-Id"), Some("u1"));
    assert_eq!(last.json()["prompt"], "cat");
    assert_eq!(api.count("/v1/images/generate"), 2);

    api.set_response(
        "/v1/predictions/p1",
        Canned::json(&serde_json::json!({"a": 1})).gzip(),
    );
    let r = c
        .get(format!("{}/v1/predictions/p1", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        gzip(br#"{"a":1}"#).as_slice()
    );

    api.set_handler("/dyn", |req| {
        Canned::new(200, "text/plain", req.body.clone())
    });
    let r = c
        .put(format!("{}/dyn", api.url()))
        .body("mirror")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "mirror");
}

#[tokio::test]
async fn studio_api_echo_big_slow() {
    let api = StudioApi::start().await;
    let c = client();
    let r = c
        .patch(format!("{}/echo/a/b?status=418&x=%20y", api.url()))
        .header("x-custom", "hello")
        .header("content-type", "text/plain")
        .body("ping")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(header(&r, "x-echo-method"), "PATCH");
    assert_eq!(header(&r, "x-echo-path"), "/echo/a/b?status=418&x=%20y");
    assert_eq!(header(&r, "x-echo-h-x-custom"), "hello");
    assert_eq!(header(&r, "content-type"), "text/plain");
    assert_eq!(r.text().await.unwrap(), "ping");

    let r = c
        .get(format!("{}/big?bytes=100000", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        big_bytes(100_000, 0).as_slice()
    );

    let r = c
        .get(format!("{}/slow?ms=100", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "slow done");
    assert_eq!(
        c.get(format!("{}/nothing", api.url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(api.count("/big"), 1);
    assert_eq!(api.total_requests(), 4);
}

#[tokio::test]
async fn raw_client_keeps_dot_segments() {
    let api = StudioApi::start().await;
    let r = raw_get(&api.addr(), "/echo/../x/%2e%2e/%2F?q=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-path"), Some("/echo/../x/%2e%2e/%2F?q=1"));
}

#[tokio::test]
async fn wait_until_polls() {
    let start = Instant::now();
    assert!(
        wait_until(secs(5), || async {
            start.elapsed() > Duration::from_millis(120)
        })
        .await
    );
    assert!(!wait_until(Duration::from_millis(100), || async { false }).await);
}
