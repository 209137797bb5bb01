//! Lifecycle rules on S3: the per-user limit deletes from the bucket, and a
//! replica that never served an image still decides by the access times the
//! others published under `~state/access/`.

use crate::common::fixtures::unique_png;
use crate::common::*;
use crate::*;
use futures::TryStreamExt;
use object_store::ObjectStore;
use std::collections::HashMap;
use std::time::Duration;

/// Every replica's published access times (`user/id` -> unix ms).
async fn shared_access_times(w: &World) -> Vec<HashMap<String, u64>> {
    let bucket = w.garage.bucket();
    let prefix = crate::garage::path("images/~state/access");
    let names: Vec<_> = bucket
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list ~state/access/");
    let mut out = Vec::new();
    for o in names {
        let bytes = bucket
            .get(&o.location)
            .await
            .expect("GET access file")
            .bytes()
            .await
            .expect("read access file");
        out.push(serde_json::from_slice(&bytes).expect("access file is a JSON map"));
    }
    out
}

fn key_of(img: &Img) -> String {
    format!("{}/{}", img.hosted.user, img.hosted.image_id)
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
    let a = w.replica(&[("IMAGE_PER_USER_LIMIT", "2")]).await;
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
    let b = w.replica(&[("IMAGE_PER_USER_LIMIT", "2")]).await;
    let c = w.replica(&[("IMAGE_PER_USER_LIMIT", "0")]).await;
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
    // C publishes its access times every few seconds.
    let published = wait_until(secs(20), || async {
        shared_access_times(&w).await.iter().any(|t| {
            matches!((t.get(&key_of(&e1)), t.get(&key_of(&e3))), (Some(t1), Some(t3)) if t1 > t3)
        })
    })
    .await;
    assert!(
        published,
        "C never published e1's request time to the bucket"
    );

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
    // left and 404s what went.
    let fresh = w.replica(&[]).await;
    for img in [&d1, &d3, &e1, &e3] {
        w.host.expire(&img.source_path);
        assert_serves(&get(&fresh, img, &[]).await, img, "fresh replica");
        assert_serves(&get(&b, img, &[]).await, img, "B");
    }
    for img in [&d2, &e2] {
        for p in [&fresh, &a, &b] {
            assert_eq!(status_of(p, img).await, 404, "{}", img.hosted.path);
        }
    }
    // C stored e2 itself and still lists it in its index, but the bucket decides.
    assert_eq!(status_of(&c, &e2).await, 404);
}
