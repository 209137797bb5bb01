//! Lifecycle rules on S3: the per-user limit deletes from the bucket, and a
//! replica that never served an image still decides by the request times the
//! others wrote to the shared database.

use crate::common::fixtures::unique_png;
use crate::common::*;
use crate::*;
use std::time::Duration;

/// Has the shared database recorded `newer` as requested after `older`?
async fn requested_after(w: &World, newer: &Img, older: &Img) -> bool {
    let db = w.db().await;
    let a = db
        .requested_at(&newer.hosted.user, &newer.hosted.image_id)
        .await;
    let b = db
        .requested_at(&older.hosted.user, &older.hosted.image_id)
        .await;
    db.close().await;
    matches!((a, b), (Some(a), Some(b)) if a > b)
}

/// Distinct millisecond timestamps for consecutive stores and requests, so
/// "least recently requested" has one answer.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn user_keys(w: &World, user: &str) -> Vec<String> {
    let prefix = format!("images/{user}/");
    let mut keys = w.garage.image_keys().await;
    keys.retain(|k| k.starts_with(&prefix));
    keys
}

fn sorted_keys(imgs: &[&Img]) -> Vec<String> {
    let mut k: Vec<String> = imgs.iter().map(|i| i.object_key()).collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_and_cleanup_work_on_the_shared_bucket() {
    let w = World::new().await;

    // 1. IMAGE_PER_USER_LIMIT=2 on the storing replica: three images, the
    //    least recently requested one leaves the bucket.
    let a = w
        .replica(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS])
        .await;
    let d1 = w
        .store(&a, "dora", "d1.png", &unique_png(1), "image/png")
        .await;
    tick().await;
    let d2 = w
        .store(&a, "dora", "d2.png", &unique_png(2), "image/png")
        .await;
    tick().await;
    // d1 was stored first but is requested after d2 was stored.
    assert_serves(&get(&a, &d1, &[]).await, &d1, "A");
    tick().await;
    let d3 = w
        .store(&a, "dora", "d3.png", &unique_png(3), "image/png")
        .await;
    assert_eq!(
        user_keys(&w, "dora").await,
        sorted_keys(&[&d1, &d3]),
        "d2, the least recently requested, is deleted from the bucket"
    );

    // 2. Cleanup on another replica: B (limit 2) runs all along but never
    //    sees a request for eve's images; C (no limit) stores three and
    //    serves the oldest. B's cleanup must decide by the access times C
    //    shared, not by when B happened to notice the images.
    let b = w
        .replica(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS])
        .await;
    let c = w
        .replica(&[("IMAGE_PER_USER_LIMIT", "0"), TRUSTED_IDS])
        .await;
    let e1 = w
        .store(&c, "eve", "e1.png", &unique_png(11), "image/png")
        .await;
    tick().await;
    let e2 = w
        .store(&c, "eve", "e2.png", &unique_png(12), "image/png")
        .await;
    tick().await;
    let e3 = w
        .store(&c, "eve", "e3.png", &unique_png(13), "image/png")
        .await;
    tick().await;
    assert_serves(&get(&c, &e1, &[]).await, &e1, "C");
    assert_eq!(user_keys(&w, "eve").await.len(), 3, "C has no limit");
    // C writes its request times to the shared database every few seconds.
    let published = wait_until(secs(20), || requested_after(&w, &e1, &e3)).await;
    assert!(published, "C never wrote e1's request time to the database");

    let r = fetch(
        client()
            .post(format!("{}/admin/cleanup", b.admin()))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "cleanup on B: {}", r.text());
    assert_eq!(
        user_keys(&w, "eve").await,
        sorted_keys(&[&e1, &e3]),
        "B deletes the least recently requested by every replica's access \
         times (cleanup answered {})",
        r.text()
    );
    assert_eq!(
        b.metric(r#"permaproxy_cleanup_deleted_total{reason="user_limit"}"#)
            .await,
        1.0,
        "the deletion was B's"
    );

    // Any replica, including a new one on an empty disk, serves what is
    // left and answers 410 (gone, with its reason) for what went.
    let fresh = w.replica(&[]).await;
    for img in [&d1, &d3, &e1, &e3] {
        w.host.expire(&img.source_path);
        assert_serves(&get(&fresh, img, &[]).await, img, "fresh replica");
        assert_serves(&get(&b, img, &[]).await, img, "B");
    }
    for img in [&d2, &e2] {
        for p in [&fresh, &a, &b] {
            assert_eq!(status_of(p, img).await, 410, "{}", img.hosted.path);
        }
    }
    // C stored e2 itself and may still hold it in memory, but the database
    // decides within IMAGE_CACHE_REVALIDATE_SECS.
    let gone_on_c = wait_until(secs(70), || async { status_of(&c, &e2).await == 410 }).await;
    assert!(gone_on_c, "C still serves e2");
}

/// Finding 5: the per-user limit on store evicted by the storing replica's
/// own view of request times, so an image served constantly by another
/// replica was evicted. The shared database holds every replica's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_05_an_image_another_replica_serves_is_not_evicted() {
    let w = World::new().await;
    let a = w
        .replica(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS])
        .await;
    let b = w
        .replica(&[("IMAGE_PER_USER_LIMIT", "2"), TRUSTED_IDS])
        .await;
    let x = w
        .store(&a, "finn", "x.png", &unique_png(51), "image/png")
        .await;
    tick().await;
    let y = w
        .store(&a, "finn", "y.png", &unique_png(52), "image/png")
        .await;
    tick().await;
    // B serves x, the older one, again and again; A never sees a request.
    for _ in 0..5 {
        assert_serves(&get(&b, &x, &[]).await, &x, "B");
    }
    let shared = wait_until(secs(20), || requested_after(&w, &x, &y)).await;
    assert!(shared, "B's requests for x never reached the database");
    // A stores a third image: y, not x, is the least recently requested.
    let z = w
        .store(&a, "finn", "z.png", &unique_png(53), "image/png")
        .await;
    assert_eq!(
        user_keys(&w, "finn").await,
        sorted_keys(&[&x, &z]),
        "A evicts by every replica's requests"
    );
    w.host.expire(&x.source_path);
    assert_serves(&get(&b, &x, &[]).await, &x, "B, after A's store");
    assert_eq!(status_of(&a, &y).await, 410, "evicted: image_gone");
}
