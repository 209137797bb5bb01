//! The gallery's thumbnails: a 256 px variant when variants are on, the
//! original when 256 is not an allowed width (or resizing is off).

use crate::*;

fn decoded(bytes: &[u8]) -> (image::ImageFormat, u32, u32) {
    let format = image::guess_format(bytes).expect("an image");
    let img = image::load_from_memory(bytes).expect("decodes");
    (format, img.width(), img.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_thumbnails_are_256_px_variants() {
    let s = stands(&[]).await;
    let img = store(
        &s,
        "th",
        "big.png",
        "",
        common::fixtures::noise_png(600, 400, 3),
    )
    .await;
    let session = login(&s.proxy).await;
    let gallery = page(&s.proxy, &session, "/admin/ui/users/th").await.text();
    let thumb = format!("/admin/ui/media/th/{}.png?w=256", img.id());
    assert!(gallery.contains(&thumb), "the gallery asks for {thumb}");
    let r = page(&s.proxy, &session, &thumb).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "image/png");
    assert_eq!(decoded(&r.body), (image::ImageFormat::Png, 256, 171));
    assert_eq!(r.h("content-length"), r.body.len().to_string());
    // Without `w`, the original, byte for byte.
    let full = page(
        &s.proxy,
        &session,
        &format!("/admin/ui/media/th/{}.png", img.id()),
    )
    .await;
    assert_same_bytes(&full.body, &img.bytes, "the original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_256_variant_a_thumbnail_is_the_original() {
    let s = stands(&[("IMAGE_VARIANT_WIDTHS", "64,128")]).await;
    let img = store(
        &s,
        "th",
        "big.png",
        "",
        common::fixtures::noise_png(600, 400, 4),
    )
    .await;
    let session = login(&s.proxy).await;
    let thumb = format!("/admin/ui/media/th/{}.png?w=256", img.id());
    let r = page(&s.proxy, &session, &thumb).await;
    assert_eq!(r.status, 200);
    assert_same_bytes(&r.body, &img.bytes, "the original");
}
