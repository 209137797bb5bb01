//! Issue 20, finding 17: a deleted image answers `410 image_gone` with why
//! it went, for IMAGE_TOMBSTONE_DAYS, then 404 like one that never existed.

use crate::common::*;
use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_17_a_deleted_image_answers_410_with_its_reason() {
    let s = stands(&[("IMAGE_MAX_AGE_DAYS", "0.00002")]).await;
    let a = store_png(&s, "tom", "a.png", &fixtures::unique_png(71)).await;
    // Deleted by an admin, while in memory.
    assert_served(&get(&s.proxy, &a).await, &a, "A");
    let path = format!("/admin/users/tom/images/{}", a.id());
    assert_eq!(admin_delete(&s.proxy, &path).await, 204);
    assert_deleted(&get(&s.proxy, &a).await, "deleted", "deleted by an admin");
    // HEAD says the same, without a body.
    let head = fetch(client().head(s.proxy.url(&a.hosted.path))).await;
    assert_eq!(head.status, 410);

    // Expired: not requested for IMAGE_MAX_AGE_DAYS (under 2 s here).
    let b = store_png(&s, "tom", "b.png", &fixtures::unique_png(72)).await;
    assert!(
        wait_until(secs(30), || async {
            !deleted_ids(&admin_cleanup(&s.proxy, false).await, "expired").is_empty()
        })
        .await,
        "B expires"
    );
    assert_deleted(&get(&s.proxy, &b).await, "expired", "expired");
    // A variant of a deleted image says the same.
    let r = fetch(client().get(s.proxy.url(&format!("{}?w=64", b.hosted.path)))).await;
    assert_deleted(&r, "expired", "a variant of it");

    // Never existed: still 404.
    let never = b
        .hosted
        .path
        .replace(b.id(), "img_000000000000000000000000");
    let r = fetch(client().get(s.proxy.url(&never))).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["code"], "image_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_17_after_the_tombstone_window_it_is_404() {
    // 0.000002 days is about 0.2 s.
    let s = stands(&[("IMAGE_TOMBSTONE_DAYS", "0.000002")]).await;
    let a = store_png(&s, "tim", "a.png", &fixtures::unique_png(73)).await;
    let path = format!("/admin/users/tim/images/{}", a.id());
    assert_eq!(admin_delete(&s.proxy, &path).await, 204);
    assert!(
        wait_until(secs(30), || async { get(&s.proxy, &a).await.status == 404 }).await,
        "404 once the tombstone is older than IMAGE_TOMBSTONE_DAYS"
    );
    let r = get(&s.proxy, &a).await;
    assert_eq!(r.json()["code"], "image_not_found");
}
