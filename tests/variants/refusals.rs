//! What is refused, and how: a 400 naming the parameter before anything is
//! looked up, 503 with Retry-After when the pool and its queue are full,
//! and 422 for a pixel bomb, without the memory it would have taken.

use crate::common::*;
use crate::{get, host, stands, variants_total};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_400_naming_the_parameter() {
    let s = stands(&[("IMAGE_VARIANT_WIDTHS", "100, 200")]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "frank").await;
    let cases = [
        ("w=256", "width_not_allowed", "w"),
        ("w=64", "width_not_allowed", "w"),
        ("w=100&w=200", "duplicate_parameter", "w"),
        ("w=100&utm=x", "unknown_parameter", "utm"),
        ("width=100", "unknown_parameter", "width"),
        ("w=100&fit=squash", "invalid_parameter", "fit"),
        ("w=100&format=tiff", "invalid_parameter", "format"),
        ("w=100&q=0", "invalid_parameter", "q"),
        ("w=-1", "invalid_parameter", "w"),
        ("w=100&h=201", "height_out_of_range", "h"),
        ("h=100", "width_required", "w"),
    ];
    for (query, code, parameter) in cases {
        let r = get(&s.proxy, &h, query, &[]).await;
        assert_eq!(r.status, 400, "?{query}: {}", r.text());
        let body = r.json();
        assert_eq!(body["code"], code, "?{query}");
        assert_eq!(body["parameter"], parameter, "?{query}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(r.h("content-type"), "application/json");
    }
    // Refused before any lookup: an unknown image gets the same 400.
    let missing = Hosted {
        path: format!("/v1/images/hosted/frank/img_{}.png", "0".repeat(24)),
        ..h.clone()
    };
    assert_eq!(get(&s.proxy, &missing, "w=256", &[]).await.status, 400);
    assert_eq!(get(&s.proxy, &missing, "w=100", &[]).await.status, 404);
    assert_eq!(
        variants_total(&s.proxy, "rejected").await,
        cases.len() as f64 + 1.0
    );
    // The listed widths work.
    let r = get(&s.proxy, &h, "w=200", &[]).await;
    assert_eq!(crate::decoded(&r).1, 200);
}

/// One transcode slot and no queue: while a slow make holds the slot, a
/// request for another variant is refused at once, never queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_503_with_retry_after() {
    let s = stands(&[
        ("IMAGE_TRANSCODE_CONCURRENCY", "1"),
        ("IMAGE_TRANSCODE_QUEUE", "0"),
    ])
    .await;
    // Slow on purpose: a 2048 px picture to a 1024 px AVIF.
    let photo = image::load_from_memory(crate::PHOTO).unwrap();
    let big = photo.resize_exact(2048, 2048, image::imageops::FilterType::Nearest);
    let h = host(
        &s,
        "big.png",
        &crate::encode(&big, image::ImageFormat::Png),
        "gina",
    )
    .await;
    let proxy_url = s.proxy.url(&format!("{}?w=1024&format=avif", h.path));
    let slow = tokio::spawn(async move { client().get(proxy_url).send().await });
    let p = &s.proxy;
    assert!(
        wait_until(secs(30), || async {
            p.metric("permaproxy_transcodes_in_flight").await >= 1.0
        })
        .await,
        "the slow make never started"
    );
    let r = get(&s.proxy, &h, "w=64&format=webp", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "transcode_busy");
    assert_eq!(r.h("retry-after"), "1");
    assert_eq!(variants_total(&s.proxy, "rejected").await, 1.0);
    slow.abort();
}

/// A 48 KB PNG that decodes to 400 million pixels, let in by a raised
/// IMAGE_MAX_PIXELS: the memory budget refuses it from its header, before
/// a byte is decoded, and the process never grows by what decoding takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pixel_bomb_is_refused_without_its_memory() {
    let s = stands(&[("IMAGE_MAX_PIXELS", "500000000")]).await;
    let h = host(&s, "bomb.png", crate::BOMB, "hank").await;
    for query in ["w=256", "w=256&format=webp", "w=256"] {
        let r = get(&s.proxy, &h, query, &[]).await;
        assert_eq!(r.status, 422, "?{query}: {}", r.text());
        assert_eq!(r.json()["code"], "variant_too_large", "?{query}");
    }
    assert_eq!(variants_total(&s.proxy, "rejected").await, 3.0);
    assert_eq!(variants_total(&s.proxy, "made").await, 0.0);
    let pid = s.proxy.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    // Decoding would take 400 MB (8-bit grey); the process stays near its
    // idle size.
    assert!(peak_kib < 200 * 1024, "peak RSS {peak_kib} KiB");
    // The image itself is still served as stored.
    let r = get(&s.proxy, &h, "", &[]).await;
    assert_same_bytes(&r.body, crate::BOMB, "the original");
}

/// Widths are listed, but heights, fits, formats and qualities multiply:
/// the variants stored per image are bounded too. At the bound, the least
/// recently requested variant makes room: the app's own variant is never
/// locked out by others (issue 20, finding 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_04_variant_lockout() {
    let s = stands(&[("IMAGE_VARIANTS_PER_IMAGE", "2")]).await;
    let h = host(&s, "photo.png", crate::PHOTO, "pia").await;
    for q in [
        "w=64&format=webp&q=1",
        "w=64&format=webp&q=2",
        "w=64&format=webp&q=3",
    ] {
        assert_eq!(get(&s.proxy, &h, q, &[]).await.status, 200, "?{q}");
        assert!(
            crate::variant_rows(&s.proxy, &h).await <= 2,
            "never past the bound"
        );
    }
    // The app's own variant still gets made, and served.
    let r = get(&s.proxy, &h, "w=256&format=webp", &[]).await;
    let (_, w, _) = crate::decoded(&r);
    assert_eq!(w, 256);
    assert_eq!(crate::variant_rows(&s.proxy, &h).await, 2);
    assert_eq!(
        crate::variant_files(&s.proxy, &h).len(),
        2,
        "evicted bytes removed"
    );
    assert_eq!(
        get(&s.proxy, &h, "w=256&format=webp", &[]).await.status,
        200
    );
    // An evicted one comes back on request, too.
    assert_eq!(
        get(&s.proxy, &h, "w=64&format=webp&q=1", &[]).await.status,
        200
    );
    assert_eq!(crate::variant_rows(&s.proxy, &h).await, 2);
}
