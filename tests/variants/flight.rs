//! Single flight: concurrent requests for one variant make it once.

use crate::common::*;
use crate::{decoded, host, stands, transcodes, variant_files, variants_total};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_make_one_transcode() {
    let s = stands(&[]).await;
    // Large enough that the make takes a while, so the requests overlap it.
    let photo = image::load_from_memory(crate::PHOTO).unwrap();
    let big = photo.resize_exact(1804, 1200, image::imageops::FilterType::Triangle);
    let bytes = crate::encode(&big, image::ImageFormat::Png);
    let h = host(&s, "big.png", &bytes, "ivan").await;
    let url = s.proxy.url(&format!("{}?w=256&format=webp", h.path));
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                fetch(client().get(url)).await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(decoded(&r), (image::ImageFormat::WebP, 256, 170));
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one variant");
    assert_eq!(transcodes(&s.proxy).await, 1.0, "one transcode");
    assert_eq!(variants_total(&s.proxy, "made").await, 1.0);
    assert_eq!(variant_files(&s.proxy, &h).len(), 1);
    assert_eq!(crate::variant_rows(&s.proxy, &h).await, 1);
}
