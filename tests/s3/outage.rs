//! The bucket goes away and comes back (`garage.sh stop`, then `start` on the
//! same ports with the same data): memory still serves, generate responses
//! keep their original URLs, /readyz says 503, and everything recovers by
//! itself.

use crate::common::fixtures;
use crate::common::*;
use crate::*;
use std::time::Duration;

async fn readyz(p: &Proxy) -> Reply {
    fetch(client().get(format!("{}/readyz", p.admin()))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_stops_and_starts_again() {
    let mut w = World::new().await;
    let r = w.replica(&[("IMAGE_CACHE_REVALIDATE_SECS", "1")]).await;
    assert_eq!(readyz(&r).await.status, 200, "ready before the outage");

    let x = w
        .store(&r, "hana", "before.png", fixtures::PNG, "image/png")
        .await;
    w.host.expire(&x.source_path);
    assert_serves(&get(&r, &x, &[]).await, &x, "before the outage");
    assert_serves(&get(&r, &x, &[]).await, &x, "before the outage, memory");

    w.garage.stop().await;
    // Let the memory entry pass the revalidation age, so the next request
    // has to ask the (dead) bucket before serving it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = memory_hits(&r).await;
    assert_serves(&get(&r, &x, &[]).await, &x, "during the outage");
    assert!(
        memory_hits(&r).await > before,
        "served from the memory cache"
    );

    let ready = readyz(&r).await;
    assert_eq!(
        ready.status,
        503,
        "/readyz during the outage: {}",
        ready.text()
    );
    assert_eq!(ready.json()["status"], "not_ready");
    assert_ne!(ready.json()["storage"], "ok", "{}", ready.text());

    // The source is alive but the image cannot be stored: the client gets
    // the original URL, never a hosted URL that would not work.
    let y_src = w.source("during.jpg", fixtures::JPEG, "image/jpeg");
    let g = generate(&r, "hana").await;
    assert_eq!(g.status, 200, "generate during the outage: {}", g.text());
    assert_eq!(
        g.json()["output"][0],
        y_src.as_str(),
        "the original URL is kept while the bucket is down"
    );
    assert_serves(&get(&r, &x, &[]).await, &x, "still, from memory");

    // A replica that starts during the outage starts anyway. It cannot know
    // whether an image exists, so it must not say it does not.
    let late = w.replica(&[]).await;
    let answer = get(&late, &x, &[]).await;
    assert_eq!(
        answer.status,
        503,
        "an image the bucket cannot be asked about: {}",
        answer.text()
    );
    assert_eq!(answer.json()["code"], "storage_unavailable");

    // Back on the same ports with the same data: no restart of the proxy.
    w.garage.start().await;
    let recovered = wait_until(secs(30), || async { readyz(&r).await.status == 200 }).await;
    assert!(
        recovered,
        "/readyz did not return to 200 after the bucket came back"
    );

    let z = w
        .store(&r, "hana", "after.webp", fixtures::WEBP, "image/webp")
        .await;
    w.host.expire(&z.source_path);
    assert_serves(&get(&r, &z, &[]).await, &z, "stored after the outage");
    let (bytes, _) = w
        .garage
        .object(&z.object_key())
        .await
        .expect("the new image is in the bucket");
    assert_same_bytes(&bytes, &z.bytes, "object after recovery");
    assert_serves(&get(&r, &x, &[]).await, &x, "after the outage");
    assert_serves(&get(&late, &x, &[]).await, &x, "replica started during it");
}
