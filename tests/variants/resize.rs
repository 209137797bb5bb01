//! Resized variants of PNG, WebP and JPEG photographs, served like images.

use crate::common::*;
use crate::{decoded, get, host, photo_as, stands, variant_files, variants_total, IMMUTABLE};
use image::ImageFormat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn png_webp_and_jpeg_are_resized() {
    let s = stands(&[]).await;
    let inputs = [
        (
            "photo.png",
            crate::PHOTO.to_vec(),
            ImageFormat::Png,
            "image/png",
        ),
        (
            "photo.jpg",
            photo_as(ImageFormat::Jpeg),
            ImageFormat::Jpeg,
            "image/jpeg",
        ),
        (
            "photo.webp",
            photo_as(ImageFormat::WebP),
            ImageFormat::WebP,
            "image/webp",
        ),
    ];
    for (name, bytes, format, ct) in inputs {
        let h = host(&s, name, &bytes, "alice").await;
        let original = get(&s.proxy, &h, "", &[]).await;
        assert_eq!(original.status, 200);

        // Width only: the aspect ratio is kept (451x300 -> 256x170).
        let r = get(&s.proxy, &h, "w=256", &[]).await;
        assert_eq!(decoded(&r), (format, 256, 170), "{name} ?w=256");
        assert_eq!(r.h("content-type"), ct, "{name}");
        assert_eq!(r.h("content-length"), r.body.len().to_string());
        assert_eq!(r.h("cache-control"), IMMUTABLE);
        assert!(
            r.h("etag").starts_with('"'),
            "strong ETag: {:?}",
            r.h("etag")
        );
        assert_ne!(r.h("etag"), original.h("etag"), "its own ETag");
        assert!(r.h("vary").is_empty(), "no Vary without format=auto");
        assert!(
            r.body.len() < bytes.len(),
            "{name}: smaller than the original"
        );

        let r = get(&s.proxy, &h, "w=128&format=webp", &[]).await;
        assert_eq!(decoded(&r), (ImageFormat::WebP, 128, 85), "{name} as WebP");
        assert_eq!(r.h("content-type"), "image/webp");
        let r = get(&s.proxy, &h, "w=128&h=128&fit=cover&format=png", &[]).await;
        assert_eq!(decoded(&r), (ImageFormat::Png, 128, 128), "{name} cover");
        let r = get(&s.proxy, &h, "w=64&h=64&fit=contain&format=jpeg&q=50", &[]).await;
        assert_eq!(decoded(&r), (ImageFormat::Jpeg, 64, 64), "{name} contain");
    }
    assert_eq!(variants_total(&s.proxy, "made").await, 12.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variant_is_served_like_an_image_and_made_once() {
    let mut s = stands(&[]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "bob").await;
    let first = get(&s.proxy, &h, "w=256&format=webp", &[]).await;
    assert_eq!(decoded(&first), (ImageFormat::WebP, 256, 170));
    let etag = first.h("etag").to_string();
    let len = first.body.len();
    assert_eq!(
        variant_files(&s.proxy, &h).len(),
        1,
        "stored beside its image"
    );
    assert_eq!(crate::variant_rows(&s.proxy, &h).await, 1, "and recorded");

    let r = get(
        &s.proxy,
        &h,
        "w=256&format=webp",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.h("etag")), (304, etag.as_str()));
    assert!(r.body.is_empty());
    let r = get(
        &s.proxy,
        &h,
        "w=256&format=webp",
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.h("content-range"), format!("bytes 10-19/{len}"));
    assert_same_bytes(&r.body, &first.body[10..20], "range of a variant");
    let r = fetch(client().head(s.proxy.url(&format!("{}?w=256&format=webp", h.path)))).await;
    assert_eq!(
        (r.status, r.h("content-length")),
        (200, len.to_string().as_str())
    );
    assert!(r.body.is_empty());
    assert_eq!(variants_total(&s.proxy, "made").await, 1.0, "made once");
    assert_eq!(variants_total(&s.proxy, "hit").await, 3.0);

    // The same output asked another way is the same variant.
    let r = get(
        &s.proxy,
        &h,
        "format=webp&fit=inside&w=256&exp=1&sig=x",
        &[],
    )
    .await;
    assert_eq!(r.h("etag"), etag);
    assert_eq!(variants_total(&s.proxy, "made").await, 1.0);

    s.proxy.restart().await;
    let again = get(&s.proxy, &h, "w=256&format=webp", &[]).await;
    assert_same_bytes(&again.body, &first.body, "after a restart");
    assert_eq!(again.h("etag"), etag);
    assert_eq!(
        variants_total(&s.proxy, "made").await,
        0.0,
        "read, not made again"
    );
    assert_eq!(variants_total(&s.proxy, "hit").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upscaling_the_original_size_is_served() {
    let s = stands(&[]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "carol").await;
    let original = get(&s.proxy, &h, "", &[]).await;
    // 1024 is allowed, but the photo is 451 wide: the original itself.
    let r = get(&s.proxy, &h, "w=1024", &[]).await;
    assert_same_bytes(&r.body, &original.body, "?w=1024 of a 451 px image");
    assert_eq!(r.h("etag"), original.h("etag"));
    assert_eq!(variants_total(&s.proxy, "original").await, 1.0);
    // A format change at the original size is still made, never larger.
    let r = get(&s.proxy, &h, "w=2048&format=webp", &[]).await;
    assert_eq!(decoded(&r), (ImageFormat::WebP, 451, 300));
    let r = get(&s.proxy, &h, "w=1024&h=2048&fit=cover&format=png", &[]).await;
    let (_, w, hh) = decoded(&r);
    assert!(
        w <= 451 && hh <= 300,
        "cover box shrunk to 1:1, got {w}x{hh}"
    );
    assert_eq!(variants_total(&s.proxy, "made").await, 2.0);
    assert!(variant_files(&s.proxy, &h).len() == 2);
}

/// AVIF cannot be decoded here: its variants are the original itself. A
/// GIF's resized variant is its first frame, as PNG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avif_is_served_as_it_is_and_gif_becomes_png() {
    let s = stands(&[]).await;
    let avif = host(&s, "sample.avif", fixtures::AVIF, "quinn").await;
    let r = get(&s.proxy, &avif, "w=64&format=webp", &[]).await;
    assert_eq!((r.status, r.h("content-type")), (200, "image/avif"));
    assert_eq!(variants_total(&s.proxy, "original").await, 1.0);
    let gif = host(&s, "sample.gif", fixtures::GIF, "quinn").await;
    let r = get(&s.proxy, &gif, "w=64&h=32&fit=cover", &[]).await;
    assert_eq!(decoded(&r), (ImageFormat::Png, 64, 32));
}
