//! Hostile or broken sources: each is refused with a metric, nothing is
//! stored, and the original URL stays in the answer.

use crate::common::*;
use crate::raw::{Answer, RawSource};
use crate::*;
use base64::Engine;

pub const NOT_IMAGE: &str = "not a PNG, JPEG, WebP, GIF or AVIF";

/// Generates with one hostile `src` (and a good image beside it); asserts the
/// hostile one is kept, refused with the `rejected` metric and a log line
/// holding `reason`, and not stored.
pub async fn assert_refused(s: &Stands, src: &str, what: &str, reason: &str) {
    let before = s.proxy.metric(REJECTED).await;
    let good_path = format!("/good/{}.png", sha256_hex(src.as_bytes()));
    let good = s
        .host
        .add_url(&good_path, fixtures::unique_png(before as u64), "image/png");
    let out = generate_outputs(s, &[src.to_string(), good]).await;
    assert_kept(&out[0], src);
    let ok = hosted(&out[1]);
    assert_eq!(
        s.proxy.metric(REJECTED).await,
        before + 1.0,
        "{what}: one refusal counted"
    );
    assert_logged(&s.proxy.log_text(), src, reason);
    let stored: Vec<_> = stored_files(s.proxy.storage_path())
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&expected_image_id(src))
        })
        .collect();
    assert!(stored.is_empty(), "{what}: files {stored:?}");
    assert!(
        staging_files(s.proxy.storage_path()).is_empty(),
        "{what}: staging not cleaned"
    );
    // The hosted path of the refused source is not an image either.
    let refused = Hosted {
        path: format!(
            "/v1/images/hosted/{}/{}.png",
            ok.user,
            expected_image_id(src)
        ),
        ..ok
    };
    let r = get_hosted(&s.proxy, &refused).await;
    assert_ne!(r.status, 200, "{what}: refused image served");
    assert!(
        r.h("content-type").starts_with("application/json"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_huge_and_non_image_sources_are_refused() {
    let s = stands(&[("IMAGE_MAX_BYTES", "20000")]).await;
    let host = &s.host;
    let cases = [
        (
            host.add_url("/h/big.png", fixtures::large_png(100_000, 1), "image/png"),
            "larger than IMAGE_MAX_BYTES",
            "IMAGE_MAX_BYTES",
        ),
        (
            host.add_url(
                "/h/bomb.png",
                fixtures::png_header_with_dims(100_000, 100_000),
                "image/png",
            ),
            "10 gigapixel header",
            "IMAGE_MAX_PIXELS",
        ),
        (
            host.add_url("/h/error.png", fixtures::HTML, "text/html"),
            "HTML error page",
            NOT_IMAGE,
        ),
        (
            host.add_url("/h/fake.png", fixtures::HTML, "image/png"),
            "HTML labelled image/png",
            NOT_IMAGE,
        ),
        (
            host.add_url("/h/vector.svg", fixtures::SVG, "image/svg+xml"),
            "SVG",
            NOT_IMAGE,
        ),
        (
            host.add_url("/h/notes.jpg", &b"plain text, no image"[..], "image/jpeg"),
            "text",
            NOT_IMAGE,
        ),
    ];
    for (src, what, reason) in &cases {
        assert_refused(&s, src, what, reason).await;
    }
    for path in ["/h/big.png", "/h/bomb.png", "/h/error.png", "/h/vector.svg"] {
        assert_eq!(s.host.hits(path), 1, "{path}: refusals are final");
    }
    assert_eq!(s.proxy.metric(RETRY).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_cap_stops_an_endless_body_while_streaming() {
    let mut head = fixtures::noise_png(64, 64, 7);
    head.truncate(64); // a real PNG header: the sniff and pixel checks pass
    let src = RawSource::start(move |_| Answer::Endless(head.clone())).await;
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = ProxyOptions::new(&api.url())
        .env("REPLICATE_HOSTS", &format!("{},{}", src.addr, host.addr()))
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
        .env("IMAGE_MAX_BYTES", "1000000");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    assert_refused(
        &s,
        &src.url("/endless.png"),
        "endless body",
        "IMAGE_MAX_BYTES",
    )
    .await;
    assert_eq!(src.requests(), 1);
    // The proxy hung up soon after 1 MB; socket buffers hold a few MB at most.
    assert!(
        src.bytes_sent() < 32 << 20,
        "the body was read to {} bytes, not stopped at the cap",
        src.bytes_sent()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_only_to_allowed_hosts_and_at_most_three() {
    let s = stands(&[]).await;
    let other = FileHost::start().await; // not in REPLICATE_HOSTS
    let elsewhere = other.add_url("/x.png", fixtures::PNG, "image/png");
    let host = &s.host;

    host.redirect("/r/away.png", &elsewhere);
    assert_refused(
        &s,
        &host.url("/r/away.png"),
        "redirect to another host",
        "REPLICATE_HOSTS",
    )
    .await;
    assert_eq!(
        other.hits("/x.png"),
        0,
        "the forbidden host was never asked"
    );

    // Three hops are followed...
    let three = fixtures::unique_png(33);
    host.add("/r/3/end.png", three.clone(), "image/png");
    host.redirect("/r/3/a.png", &host.url("/r/3/b.png"));
    host.redirect("/r/3/b.png", &host.url("/r/3/c.png"));
    host.redirect("/r/3/c.png", &host.url("/r/3/end.png"));
    let out = generate_outputs(&s, &[host.url("/r/3/a.png")]).await;
    let h = hosted(&out[0]);
    assert_serves(&get_hosted(&s.proxy, &h).await, &three, "3 redirects");

    // ...a fourth is not.
    host.add("/r/4/end.png", fixtures::unique_png(44), "image/png");
    host.redirect("/r/4/a.png", &host.url("/r/4/b.png"));
    host.redirect("/r/4/b.png", &host.url("/r/4/c.png"));
    host.redirect("/r/4/c.png", &host.url("/r/4/d.png"));
    host.redirect("/r/4/d.png", &host.url("/r/4/end.png"));
    assert_refused(
        &s,
        &host.url("/r/4/a.png"),
        "4 redirects",
        "more than 3 redirects",
    )
    .await;
    assert_eq!(
        host.hits("/r/4/end.png"),
        0,
        "the 4th redirect not followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_uris_of_images_are_stored_and_others_are_not() {
    let s = stands(&[]).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let png = fixtures::unique_png(77);
    let png_uri = format!("data:image/png;base64,{}", b64(&png));
    let jpeg_uri = format!(
        "data:application/octet-stream;base64,{}",
        b64(fixtures::JPEG)
    );
    let html_uri = format!("data:text/html;base64,{}", b64(fixtures::HTML));
    let disguised = format!("data:image/png;base64,{}", b64(fixtures::HTML));
    let out = generate_outputs(
        &s,
        &[png_uri, jpeg_uri, html_uri.clone(), disguised.clone()],
    )
    .await;
    let hp = hosted(&out[0]);
    assert_eq!(hp.ext, "png");
    let hj = hosted(&out[1]);
    assert_eq!(hj.ext, "jpg");
    assert_kept(&out[2], &html_uri);
    assert_kept(&out[3], &disguised);
    assert_eq!(
        s.proxy.metric(REJECTED).await,
        1.0,
        "the HTML bytes labelled image/png were refused"
    );
    assert_logged(&s.proxy.log_text(), &disguised, NOT_IMAGE);
    let r = get_hosted(&s.proxy, &hp).await;
    assert_serves(&r, &png, "PNG from a data: URI");
    assert_eq!(r.h("content-type"), "image/png");
    let r = get_hosted(&s.proxy, &hj).await;
    assert_serves(&r, fixtures::JPEG, "JPEG from a data: URI");
    assert_eq!(r.h("content-type"), "image/jpeg");
    for f in files_under(s.proxy.storage_path()) {
        let data = std::fs::read(&f).unwrap();
        assert!(
            !data.windows(11).any(|w| w == b"Bad Gateway"),
            "HTML stored in {}",
            f.display()
        );
    }
    assert_eq!(
        stored_files(s.proxy.storage_path()).len(),
        4,
        "2 images + 2 sidecars"
    );
}
