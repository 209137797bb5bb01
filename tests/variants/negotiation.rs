//! `format=auto`: AVIF if accepted, else WebP, else the original format,
//! always with `Vary: Accept`.

use crate::common::*;
use crate::{decoded, get, host, stands, variants_total};
use image::ImageFormat;

const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
const OLD_SAFARI: &str = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";
const IOS_URLSESSION: &str = "*/*";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_follows_accept_and_varies_on_it() {
    let s = stands(&[]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "dana").await;
    let cases = [
        (CHROME, ImageFormat::Avif, "image/avif"),
        (OLD_SAFARI, ImageFormat::WebP, "image/webp"),
        (IOS_URLSESSION, ImageFormat::Png, "image/png"),
    ];
    let mut etags = Vec::new();
    for (accept, format, ct) in cases {
        let r = get(&s.proxy, &h, "w=128&format=auto", &[("accept", accept)]).await;
        assert_eq!(decoded(&r), (format, 128, 85), "Accept: {accept}");
        assert_eq!(r.h("content-type"), ct, "Accept: {accept}");
        assert_eq!(r.h("vary"), "Accept", "Accept: {accept}");
        etags.push(r.h("etag").to_string());
    }
    etags.dedup();
    assert_eq!(etags.len(), 3, "three different answers, three ETags");
    assert_eq!(variants_total(&s.proxy, "made").await, 3.0);

    // Asked again, each comes from memory, still varying on Accept; a 304
    // carries Vary too.
    let r = get(&s.proxy, &h, "w=128&format=auto", &[("accept", CHROME)]).await;
    assert_eq!(r.h("vary"), "Accept");
    let etag = r.h("etag").to_string();
    let r = get(
        &s.proxy,
        &h,
        "w=128&format=auto",
        &[("accept", CHROME), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!((r.status, r.h("vary")), (304, "Accept"));
    // The WebP asked for explicitly is the same bytes, without Vary.
    let explicit = get(&s.proxy, &h, "w=128&format=webp", &[]).await;
    assert_eq!(explicit.h("etag"), etags[1]);
    assert!(explicit.h("vary").is_empty());
    assert_eq!(variants_total(&s.proxy, "made").await, 3.0);
}

/// `format=auto` at the original's size, for a client that takes neither
/// AVIF nor WebP: the original itself, but still with `Vary: Accept`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_answered_with_the_original_still_varies() {
    let s = stands(&[]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "erin").await;
    let r = get(&s.proxy, &h, "format=auto", &[("accept", IOS_URLSESSION)]).await;
    let plain = get(&s.proxy, &h, "", &[]).await;
    assert_same_bytes(&r.body, &plain.body, "the original");
    assert_eq!(r.h("vary"), "Accept");
    assert!(plain.h("vary").is_empty(), "a plain request does not vary");
}
