//! Many concurrent calls: every hosted URL serves exactly its source's bytes,
//! and concurrent needs for one image share a single download.

use crate::common::*;
use crate::*;
use futures::StreamExt;
use std::time::Duration;

const NO_LIMITS: &[(&str, &str)] = &[
    ("IMAGE_PER_USER_LIMIT", "0"),
    ("IMAGE_DOWNLOAD_RATE_PER_SEC", "1000000"),
    ("IMAGE_DOWNLOAD_BURST", "1000000"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_calls_with_four_images_each() {
    let s = stands(NO_LIMITS).await;
    let calls = 100u64;
    let mut sources = Vec::new(); // (path, url, bytes), 4 per call
    for i in 0..calls {
        for k in 0..4u64 {
            let path = format!("/load/{i}/out-{k}.png");
            let img = fixtures::unique_png(10_000 + i * 4 + k);
            let url = s.host.add_url(&path, img.clone(), "image/png");
            sources.push((path, url, img));
        }
    }
    let urls: Vec<String> = sources.iter().map(|(_, u, _)| u.clone()).collect();
    s.api.set_handler(GEN, move |req| {
        let i = req.json()["n"].as_u64().expect("n") as usize;
        Canned::json(&serde_json::json!({
            "id": format!("p{i}"),
            "output": urls[i * 4..i * 4 + 4],
        }))
    });
    let replies = futures::future::join_all((0..calls).map(|i| {
        let rb = client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", format!("user-{}", i % 7))
            .body(serde_json::json!({"n": i}).to_string());
        fetch(rb)
    }))
    .await;

    let mut checks = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
        let v = r.json();
        assert_eq!(
            v["id"],
            format!("p{i}"),
            "call {i} got another call's answer"
        );
        let out = v["output"].as_array().expect("output array");
        assert_eq!(out.len(), 4);
        for (k, o) in out.iter().enumerate() {
            let h = hosted(o);
            let (_, url, img) = &sources[i * 4 + k];
            assert_eq!(h.user, format!("user-{}", i % 7));
            assert_eq!(h.image_id, expected_image_id(url), "call {i} output {k}");
            checks.push((h, img.clone()));
        }
    }
    assert_eq!(checks.len(), 400);
    let proxy = &s.proxy;
    let results: Vec<(Hosted, Vec<u8>, Reply)> = futures::stream::iter(checks)
        .map(|(h, img)| async move {
            let r = get_hosted(proxy, &h).await;
            (h, img, r)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (h, img, r) in &results {
        assert_serves(r, img, &h.path);
    }
    for (path, _, _) in &sources {
        assert_eq!(s.host.hits(path), 1, "{path} downloaded once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_calls_for_one_new_source_download_it_once() {
    let s = stands(NO_LIMITS).await;
    let img = fixtures::large_png(80_000, 2000);
    let src = s.host.add_url("/same/out-0.png", img.clone(), "image/png");
    // Slow enough that every call arrives while the download is in flight.
    s.host.slow("/same/out-0.png", Duration::from_millis(1500));
    s.api
        .set_generate_json(&serde_json::json!({"output": [src]}));
    let replies = futures::future::join_all((0..20).map(|_| generate(&s.proxy, "{}"))).await;
    let mut paths = std::collections::HashSet::new();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
        paths.insert(hosted(&r.json()["output"][0]).path);
    }
    assert_eq!(paths.len(), 1, "one hosted URL for everyone: {paths:?}");
    assert_eq!(s.host.hits("/same/out-0.png"), 1, "exactly one download");
    let path = paths.into_iter().next().unwrap();
    let r = fetch(client().get(s.proxy.url(&path))).await;
    assert_serves(&r, &img, "the shared image");
}
