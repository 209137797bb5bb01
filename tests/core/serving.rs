//! Persisted images served by the proxy: durability, caching headers,
//! conditional and range requests, and the 404/400 cases.

use crate::common::*;
use crate::{answer_json, assert_image_response, generate, get_hosted, hosted, stands, Stands};
use serde_json::json;

/// Generates one image from `path` on the file host; returns its hosted URL.
async fn one_image(s: &Stands, path: &str, bytes: &[u8], ct: &str, ext: &str) -> Hosted {
    let src = s.host.add_url(path, bytes.to_vec(), ct);
    answer_json(&s.api, &json!({"output": [src]}).to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    hosted(&r.json()["output"][0], &s.proxy.base(), "anonymous", ext)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_survives_source_expiry_and_restart() {
    let mut s = stands(&[]).await;
    let h = one_image(&s, "/pbxt/d/out-0.png", fixtures::PNG, "image/png", "png").await;
    s.host.expire("/pbxt/d/out-0.png");
    let first = get_hosted(&s.proxy, &h, &[]).await;
    assert_image_response(&first, fixtures::PNG, "image/png");

    s.proxy.restart().await;
    let again = get_hosted(&s.proxy, &h, &[]).await;
    assert_image_response(&again, fixtures::PNG, "image/png");
    assert_eq!(again.h("etag"), first.h("etag"), "ETag survives a restart");
    assert_eq!(again.h("last-modified"), first.h("last-modified"));
    assert_eq!(
        s.host.hits("/pbxt/d/out-0.png"),
        1,
        "stored once, never fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_served_with_its_content_type() {
    let s = stands(&[]).await;
    for (i, (bytes, ct, ext)) in fixtures::all().into_iter().enumerate() {
        let h = one_image(&s, &format!("/pbxt/f/out-{i}.{ext}"), bytes, ct, ext).await;
        s.host.expire(&format!("/pbxt/f/out-{i}.{ext}"));
        assert_image_response(&get_hosted(&s.proxy, &h, &[]).await, bytes, ct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_range_requests() {
    let s = stands(&[]).await;
    let img = fixtures::large_png(50_000, 11);
    let len = img.len();
    let h = one_image(&s, "/pbxt/r/out-0.png", &img, "image/png", "png").await;
    let full = get_hosted(&s.proxy, &h, &[]).await;
    assert_image_response(&full, &img, "image/png");
    let etag = full.h("etag").to_string();

    let r = get_hosted(&s.proxy, &h, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.h("etag"), etag);
    let r = get_hosted(
        &s.proxy,
        &h,
        &[("if-none-match", &format!("\"nope\", {etag}"))],
    )
    .await;
    assert_eq!(r.status, 304, "If-None-Match with a list");
    let r = get_hosted(&s.proxy, &h, &[("if-none-match", "\"some-other-etag\"")]).await;
    assert_image_response(&r, &img, "image/png");

    let cases: [(&str, usize, usize); 4] = [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", len - 5, len - 1),
        ("bytes=100-", 100, len - 1),
        ("bytes=0-999999999", 0, len - 1),
    ];
    for (range, start, end) in cases {
        let r = get_hosted(&s.proxy, &h, &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.h("content-range"),
            format!("bytes {start}-{end}/{len}"),
            "{range}"
        );
        assert_eq!(
            r.h("content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert_same_bytes(&r.body, &img[start..=end], range);
        assert_eq!(r.h("content-type"), "image/png");
    }
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 10, len + 20),
    ] {
        let r = get_hosted(&s.proxy, &h, &[("range", &range)]).await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.h("content-range"), format!("bytes */{len}"), "{range}");
    }

    let r = fetch(client().head(s.proxy.url(&h.path))).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(r.h("content-length"), len.to_string());
    assert_eq!(r.h("content-type"), "image/png");
    assert_eq!(r.h("etag"), etag);
    assert_eq!(r.h("cache-control"), crate::IMMUTABLE);
    assert_eq!(r.h("accept-ranges"), "bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_give_404_json_and_are_never_forwarded() {
    let s = stands(&[]).await;
    let h = one_image(&s, "/pbxt/u/out-0.png", fixtures::PNG, "image/png", "png").await;
    let upstream_before = s.api.total_requests();
    let paths = [
        "/v1/images/hosted/anonymous/img_000000000000000000000000.png".to_string(),
        format!("/v1/images/hosted/someone-else/{}.png", h.image_id),
        "/v1/images/hosted/nobody/img_0123456789abcdef01234567.webp".to_string(),
    ];
    for path in &paths {
        let r = fetch(client().get(s.proxy.url(path))).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.h("content-type").starts_with("application/json"),
            "{path}"
        );
        let v = r.json();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert!(v["code"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
        let r = fetch(client().head(s.proxy.url(path))).await;
        assert_eq!(r.status, 404, "HEAD {path}");
        assert!(r.body.is_empty());
    }
    // The stored image under another extension is not a different file.
    let r = fetch(
        client().get(
            s.proxy
                .url(&format!("/v1/images/hosted/anonymous/{}.jpg", h.image_id)),
        ),
    )
    .await;
    assert!(
        r.status == 404 || (r.status == 200 && r.body.as_ref() == fixtures::PNG),
        "wrong extension: {} {:?}",
        r.status,
        r.text()
    );
    assert_eq!(
        s.api.total_requests(),
        upstream_before,
        "hosted paths never reach upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_and_path_tricks_never_escape_storage() {
    const MARKER: &[u8] = b"TOPSECRET-MARKER-do-not-serve";
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    std::fs::create_dir_all(store.join("anonymous")).unwrap();
    std::fs::write(root.path().join("secret.png"), MARKER).unwrap();
    std::fs::write(store.join("anonymous").join("evil.png"), MARKER).unwrap();
    std::fs::write(store.join("secret.png"), MARKER).unwrap();

    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let proxy = Proxy::start(ProxyOptions::for_stands(&api, &host).storage(&store)).await;
    let s = Stands { host, api, proxy };
    let h = one_image(&s, "/pbxt/p/out-0.png", fixtures::PNG, "image/png", "png").await;
    let id = &h.image_id;
    let upstream_before = s.api.total_requests();

    let long_id = format!("img_{}", "a".repeat(5000));
    let long_user = "u".repeat(5000);
    let targets = [
        "/v1/images/hosted/../../secret.png".to_string(),
        "/v1/images/hosted/anonymous/../../secret.png".to_string(),
        "/v1/images/hosted/anonymous/../../../secret.png".to_string(),
        "/v1/images/hosted/../../../../../../etc/passwd".to_string(),
        "/v1/images/hosted/%2e%2e/secret.png".to_string(),
        "/v1/images/hosted/%2e%2e/%2e%2e/secret.png".to_string(),
        "/v1/images/hosted/anonymous/.%2e/.%2e/secret.png".to_string(),
        "/v1/images/hosted/anonymous/..%2f..%2fsecret.png".to_string(),
        "/v1/images/hosted/anonymous/..%2F..%2F..%2Fsecret.png".to_string(),
        "/v1/images/hosted/anonymous%2F..%2F..%2Fsecret.png".to_string(),
        "/v1/images/hosted/anonymous/..%5c..%5csecret.png".to_string(),
        "/v1/images/hosted/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/v1/images/hosted/anonymous/evil.png".to_string(),
        "/v1/images/hosted/anonymous/secret.png".to_string(),
        "/v1/images/hosted/./secret.png".to_string(),
        "/v1/images/hosted/%2e/secret.png".to_string(),
        format!("/v1/images/hosted/anonymous/{id}.png%00.txt"),
        format!("/v1/images/hosted/anonymous/{id}%00.png"),
        format!("/v1/images/hosted/anon%00ymous/{id}.png"),
        format!("/v1/images/hosted/anonymous/{id}.png/extra"),
        format!("/v1/images/hosted/anonymous/{id}"),
        format!("/v1/images/hosted/anonymous/{id}.exe"),
        format!("/v1/images/hosted/anonymous/{id}.png.meta"),
        format!("/v1/images/hosted/./{id}.png"),
        format!("/v1/images/hosted/../{id}.png"),
        format!("/v1/images/hosted/%2e%2e/{id}.png"),
        format!("/v1/images/hosted/anonymous/{long_id}.png"),
        format!("/v1/images/hosted/{long_user}/{id}.png"),
        "/v1/images/hosted/anonymous/img_XYZ.png".to_string(),
        "/v1/images/hosted/anonymous/img_0123.png".to_string(),
        "/v1/images/hosted/anonymous/.png".to_string(),
        "/v1/images/hosted/anonymous/".to_string(),
        "/v1/images/hosted/".to_string(),
    ];
    for target in &targets {
        let r = raw_get(&s.proxy.addr(), target).await;
        let shown: String = target.chars().take(120).collect();
        assert!(
            [400, 404, 414].contains(&r.status),
            "{shown}: want 400 or 404, got {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !r.body.windows(MARKER.len()).any(|w| w == MARKER),
            "{shown} leaked a file"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{shown} leaked /etc/passwd"
        );
    }
    assert_eq!(
        s.api.total_requests(),
        upstream_before,
        "hosted paths never reach upstream"
    );
    // The real image is still fine.
    assert_image_response(
        &get_hosted(&s.proxy, &h, &[]).await,
        fixtures::PNG,
        "image/png",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_and_content_type_come_from_the_bytes() {
    let s = stands(&[]).await;
    let cases: [(&str, &[u8], &str, &str, &str); 5] = [
        (
            "/pbxt/x/out-0.png",
            fixtures::JPEG,
            "image/png",
            "jpg",
            "image/jpeg",
        ),
        (
            "/pbxt/x/out-1.bin",
            fixtures::WEBP,
            "application/octet-stream",
            "webp",
            "image/webp",
        ),
        ("/pbxt/x/out-2", fixtures::GIF, "", "gif", "image/gif"),
        (
            "/pbxt/x/out-3.jpg",
            fixtures::AVIF,
            "image/jpeg",
            "avif",
            "image/avif",
        ),
        (
            "/pbxt/x/out-4.webp",
            fixtures::PNG,
            "image/webp",
            "png",
            "image/png",
        ),
    ];
    for (path, bytes, sent_ct, ext, ct) in cases {
        let h = one_image(&s, path, bytes, sent_ct, ext).await;
        let r = get_hosted(&s.proxy, &h, &[]).await;
        assert_image_response(&r, bytes, ct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_image_bytes_are_not_stored_and_keep_the_original_url() {
    let s = stands(&[]).await;
    let html = s
        .host
        .add_url("/pbxt/n/error.png", fixtures::HTML, "text/html");
    let fake = s
        .host
        .add_url("/pbxt/n/fake.png", fixtures::HTML, "image/png");
    let svg = s
        .host
        .add_url("/pbxt/n/vector.svg", fixtures::SVG, "image/svg+xml");
    let text = s.host.add_url(
        "/pbxt/n/notes.jpg",
        &b"just some text, not a JPEG"[..],
        "image/jpeg",
    );
    let ok = s.host.add_url("/pbxt/n/ok.png", fixtures::PNG, "image/png");
    let body = json!({"output": [html, fake, svg, text, ok], "image": {"url": fake, "w": 1}});
    answer_json(&s.api, &body.to_string());
    let r = generate(&s.proxy, "{}", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for i in 0..4 {
        assert_eq!(
            v["output"][i], body["output"][i],
            "non-image output {i} keeps its URL"
        );
    }
    let h = hosted(&v["output"][4], &s.proxy.base(), "anonymous", "png");
    assert_eq!(
        v["image"], body["image"],
        "no siblings when the url was not rewritten"
    );

    for f in files_under(s.proxy.storage_path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("img_") {
            assert!(
                name.starts_with(&h.image_id),
                "unexpected stored file {}",
                f.display()
            );
        }
        let data = std::fs::read(&f).unwrap();
        assert!(
            !data.windows(11).any(|w| w == b"Bad Gateway"),
            "HTML stored in {}",
            f.display()
        );
        assert!(
            !data.windows(7).any(|w| w == b"<script"),
            "SVG stored in {}",
            f.display()
        );
    }
}
