//! The three lifecycle rules: the per-user limit, retention by last request
//! and the disk cap.

use crate::common::*;
use crate::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_evicts_the_least_recently_requested_not_the_oldest() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "3"), TRUSTED_IDS]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let a = store_png(&s, "u1", "a.png", &fixtures::unique_png(1)).await;
    let b = store_png(&s, "u1", "b.png", &fixtures::unique_png(2)).await;
    let c = store_png(&s, "u1", "c.png", &fixtures::unique_png(3)).await;
    // Another user's image never counts against u1's limit.
    let other = store_png(&s, "u2", "other.png", &fixtures::unique_png(4)).await;
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&a, &b, &c]));

    // A is the oldest, but now the most recently requested.
    assert_served(&get(&s.proxy, &a).await, &a, "A");
    let d = store_png(&s, "u1", "d.png", &fixtures::unique_png(5)).await;

    // Enforced as D was stored: B is gone before anything else happens.
    assert_gone(&get(&s.proxy, &b).await, "B after D was stored");
    assert_not_on_disk(&storage, &b);
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&a, &c, &d]));
    assert_eq!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"user_limit\"}")
            .await,
        1.0
    );
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 4.0);

    // Request them newest first: now D, stored last of the three, is the
    // least recently requested, and it is the one that goes for E.
    for img in [&d, &c, &a] {
        assert_served(&get(&s.proxy, img).await, img, "kept image");
        assert_on_disk(&storage, img);
    }
    let e = store_png(&s, "u1", "e.png", &fixtures::unique_png(6)).await;
    assert_gone(&get(&s.proxy, &d).await, "D after E was stored");
    assert_not_on_disk(&storage, &d);
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&a, &c, &e]));
    for img in [&a, &c, &e, &other] {
        assert_served(&get(&s.proxy, img).await, img, "kept image");
    }
    assert_gone(&get(&s.proxy, &b).await, "B stays gone");
    assert_eq!(stats_totals(&s.proxy).await.0, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_a_requested_image_and_deletes_an_idle_one() {
    // 0.00005 days = 4.32 s; cleanup every second.
    let s = stands(&[
        ("IMAGE_MAX_AGE_DAYS", "0.00005"),
        ("IMAGE_CLEANUP_INTERVAL_SECS", "1"),
    ])
    .await;
    let storage = s.proxy.storage_path().to_path_buf();
    let busy = store_png(&s, "u1", "busy.png", &fixtures::unique_png(10)).await;
    let idle = store_png(&s, "u1", "idle.png", &fixtures::unique_png(11)).await;

    // Request `busy` every quarter second in the background, and record
    // any answer that is not the image.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let loop_task = {
        let (stop, served) = (stop.clone(), served.clone());
        let url = s.proxy.url(&busy.hosted.path);
        let want = busy.bytes.clone();
        tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = fetch(client().get(&url)).await;
                if r.status == 200 && r.body[..] == want[..] {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    bad.push(format!("{} {}", r.status, r.text()));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            bad
        })
    };

    // Watch `idle` through the admin listing, which is not a request.
    let idle_gone = wait_until(secs(20), || async {
        !listed_ids(&s.proxy, "u1")
            .await
            .contains(&idle.id().to_string())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let bad = loop_task.await.expect("request loop");
    assert!(idle_gone, "the idle image was never deleted");
    assert!(
        bad.is_empty(),
        "the requested image was not served: {bad:?}"
    );
    assert!(served.load(Ordering::SeqCst) > 0);

    assert_gone(&get(&s.proxy, &idle).await, "idle image");
    assert_not_on_disk(&storage, &idle);
    assert_served(&get(&s.proxy, &busy).await, &busy, "requested image");
    assert_on_disk(&storage, &busy);
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&busy]));
    assert!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"expired\"}")
            .await
            >= 1.0
    );
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_deletes_the_least_recently_requested_across_users() {
    // Five images of the same size; the cap holds three and a half, and it
    // is enforced as each image is stored (cleanup runs daily by default).
    let png = |seed| fixtures::noise_png(40, 40, seed);
    let size = png(20).len() as u64;
    let cap = size * 7 / 2;
    let s = stands(&[("IMAGE_STORAGE_MAX_BYTES", &cap.to_string())]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let p1 = store_png(&s, "u1", "p1.png", &png(20)).await;
    let p2 = store_png(&s, "u2", "p2.png", &png(21)).await;
    let p3 = store_png(&s, "u1", "p3.png", &png(22)).await;
    assert_eq!(stats_totals(&s.proxy).await, (3, 3 * size));
    // The two oldest become the two most recently requested.
    assert_served(&get(&s.proxy, &p1).await, &p1, "p1");
    assert_served(&get(&s.proxy, &p2).await, &p2, "p2");

    // p3, u1's, is the least recently requested: it goes for u2's p4.
    let p4 = store_png(&s, "u2", "p4.png", &png(23)).await;
    assert_gone(&get(&s.proxy, &p3).await, "p3, for p4");
    // Then p1 (requested before p2) goes for p5.
    let p5 = store_png(&s, "u1", "p5.png", &png(24)).await;
    assert_gone(&get(&s.proxy, &p1).await, "p1, for p5");

    let (n, bytes) = stats_totals(&s.proxy).await;
    assert_eq!((n, bytes), (3, 3 * size));
    assert!(bytes <= cap);
    assert_eq!(
        s.proxy.metric("permaproxy_stored_bytes").await,
        bytes as f64
    );
    assert_eq!(
        s.proxy
            .metric("permaproxy_cleanup_deleted_total{reason=\"storage_cap\"}")
            .await,
        2.0
    );
    for img in [&p1, &p3] {
        assert_not_on_disk(&storage, img);
    }
    for img in [&p2, &p4, &p5] {
        assert_served(&get(&s.proxy, img).await, img, "kept under the cap");
        assert_on_disk(&storage, img);
    }

    // Under the cap, a cleanup deletes nothing, and a dry run says so.
    let dry = admin_cleanup(&s.proxy, true).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deleted"], serde_json::json!([]), "{dry}");
    let again = admin_cleanup(&s.proxy, false).await;
    assert_eq!(again["deleted"], serde_json::json!([]), "{again}");
}

/// Generates once as `user` with every `(name, bytes)` as a source of one
/// response; returns the images handed out, in order.
pub async fn one_response(s: &Stands, user: &str, images: &[(&str, Vec<u8>)]) -> Vec<Img> {
    let srcs: Vec<String> = images
        .iter()
        .map(|(name, bytes)| {
            s.host
                .add_url(&format!("/pbxt/{name}"), bytes.clone(), "image/png")
        })
        .collect();
    s.api
        .set_generate_json(&serde_json::json!({ "output": srcs }));
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", user)
            .header("authorization", session(user))
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "generate: {}", r.text());
    let out = r.json()["output"].clone();
    images
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| {
            let url = out[i].as_str().expect("a URL");
            Img {
                hosted: parse_hosted(url).unwrap_or_else(|| panic!("not hosted: {url}")),
                bytes: bytes.clone(),
                content_type: "image/png".into(),
            }
        })
        .collect()
}

/// Finding 4: one response carrying more images than the per-user limit
/// evicted its own earlier images, so it handed out URLs that 404 moments
/// later. The rule: an image handed out counts as requested at that moment,
/// and enforcement never deletes images handed out in the same response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_04_a_response_larger_than_the_limit_keeps_all_its_images() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS]).await;
    let old = store_png(&s, "una", "old.png", &fixtures::unique_png(400)).await;
    let batch: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("batch-{i}.png"), fixtures::unique_png(401 + i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = batch.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let imgs = one_response(&s, "una", &refs).await;
    for (name, _) in &batch {
        s.host.expire(&format!("/pbxt/{name}"));
    }
    for img in &imgs {
        assert_served(
            &get(&s.proxy, img).await,
            img,
            "an image of the large response",
        );
    }
    assert_gone(&get(&s.proxy, &old).await, "the older image makes room");
}

/// Finding 4, second half: an image already stored and handed out again
/// counts as requested then, so the limit evicts the others first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_04_an_image_handed_out_again_counts_as_requested() {
    let s = stands(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS]).await;
    let a_bytes = fixtures::unique_png(410);
    let a = store_png(&s, "vic", "again-a.png", &a_bytes).await;
    let b = store_png(&s, "vic", "again-b.png", &fixtures::unique_png(411)).await;
    // Studio API hands A out again (a list or poll response): the source
    // is expired, but the stored image is what the URL points at.
    let again = one_response(&s, "vic", &[("again-a.png", a_bytes)]).await;
    assert_eq!(again[0].hosted.path, a.hosted.path, "the same hosted URL");
    let c = store_png(&s, "vic", "again-c.png", &fixtures::unique_png(412)).await;
    assert_gone(&get(&s.proxy, &b).await, "B, the least recently handed out");
    assert_served(&get(&s.proxy, &a).await, &a, "A was handed out after B");
    assert_served(&get(&s.proxy, &c).await, &c, "C");
}
