//! Replicas sharing one bucket: any replica serves what another stored,
//! an empty disk is no obstacle, deletes propagate within the revalidation
//! time, and two replicas storing the same source at once corrupt nothing.

use crate::common::fixtures::{self, large_png};
use crate::common::*;
use crate::*;
use object_store::{Attribute, Attributes};
use serde_json::json;
use std::time::Duration;

fn attr(a: &Attributes, k: Attribute) -> String {
    a.get(&k).map(|v| v.to_string()).unwrap_or_default()
}

/// The object under the contract's key holds the exact bytes, with the
/// content type and digest as object metadata.
async fn assert_object(w: &World, img: &Img) {
    let key = img.object_key();
    let (bytes, attrs) = w
        .garage
        .object(&key)
        .await
        .unwrap_or_else(|| panic!("{key} is not in the bucket"));
    assert_same_bytes(&bytes, &img.bytes, &format!("object {key}"));
    assert_eq!(
        attr(&attrs, Attribute::ContentType),
        img.content_type,
        "{key}"
    );
    assert_eq!(
        attr(&attrs, Attribute::Metadata("permaproxy-sha256".into())),
        sha256_hex(&img.bytes),
        "{key}: x-amz-meta-permaproxy-sha256"
    );
    assert_eq!(
        attr(&attrs, Attribute::Metadata("permaproxy-user".into())),
        img.hosted.user,
        "{key}: x-amz-meta-permaproxy-user"
    );
}

/// `Range: bytes={first}-{last}` answers 206 with exactly that slice.
#[track_caller]
fn assert_partial(r: &Reply, img: &Img, first: usize, last: usize, who: &str) {
    assert_eq!(r.status, 206, "{who}: ranged GET; body {:?}", r.text());
    assert_same_bytes(&r.body, &img.bytes[first..=last], who);
    assert_eq!(
        r.h("content-range"),
        format!("bytes {first}-{last}/{}", img.bytes.len()),
        "{who}"
    );
    assert_eq!(
        r.h("content-length"),
        (last - first + 1).to_string(),
        "{who}"
    );
    assert_eq!(r.h("content-type"), img.content_type, "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_and_an_empty_disk_serve_what_one_stored() {
    let w = World::new().await;
    let a = w.replica(&[("IMAGE_PERSIST_TIMEOUT_MS", "60000")]).await;
    // No memory cache: every byte B sends streams from the bucket.
    let b = w.replica(&[("IMAGE_MEMORY_CACHE_MB", "0")]).await;

    let small = w
        .store(&a, "alice", "out-0.jpg", fixtures::JPEG, "image/jpeg")
        .await;
    // Above the multipart threshold, so it is uploaded in parts.
    let big_bytes = large_png(MULTIPART_SIZE, 7);
    assert!(big_bytes.len() > 8 << 20);
    let big = w
        .store(&a, "alice", "out-1.png", &big_bytes, "image/png")
        .await;

    // What the storing replica says, to compare the others against.
    let mut from_a = Vec::new();
    for img in [&small, &big] {
        let r = get(&a, img, &[]).await;
        assert_serves(&r, img, "storing replica");
        from_a.push((r.h("etag").to_string(), r.h("last-modified").to_string()));
        assert_object(&w, img).await;
        // The source expires, as Replicate's do after an hour.
        w.host.expire(&img.source_path);
    }
    assert_eq!(
        w.garage.image_keys().await,
        {
            let mut k = vec![small.object_key(), big.object_key()];
            k.sort();
            k
        },
        "exactly one object per image, under {{prefix}}{{user}}/{{id}}.{{ext}}"
    );
    for k in w.garage.keys().await {
        assert!(
            k.starts_with("images/alice/") || k.starts_with("images/~state/"),
            "{k}: replicas keep shared state under {{prefix}}~state/ and nothing else"
        );
    }

    for (img, (etag, modified)) in [&small, &big].into_iter().zip(&from_a) {
        let r = get(&b, img, &[]).await;
        assert_serves(&r, img, "other replica");
        assert_eq!(r.h("etag"), etag, "same ETag on every replica");
        assert_eq!(r.h("last-modified"), modified, "same Last-Modified");

        let h = head(&b, img).await;
        assert_eq!(h.status, 200, "HEAD from S3");
        assert!(h.body.is_empty(), "HEAD has no body");
        assert_eq!(h.h("content-length"), img.bytes.len().to_string());
        assert_eq!(h.h("content-type"), img.content_type);
        assert_eq!(h.h("etag"), etag);
        assert_eq!(h.h("cache-control"), IMMUTABLE);

        let r = get(&b, img, &[("range", "bytes=100-599")]).await;
        assert_partial(&r, img, 100, 599, "range from S3");
        let n = img.bytes.len();
        let r = get(&b, img, &[("range", "bytes=-256")]).await;
        assert_partial(&r, img, n - 256, n - 1, "suffix range from S3");
    }
    // A range across the boundary of the first and second upload part.
    let part = 8 << 20;
    let r = get(
        &b,
        &big,
        &[("range", &format!("bytes={}-{}", part - 4096, part + 4095))],
    )
    .await;
    assert_partial(&r, &big, part - 4096, part + 4095, "range across parts");
    let r = get(&b, &big, &[("if-none-match", &from_a[1].0)]).await;
    assert_eq!(r.status, 304, "conditional GET from S3");

    // B never went to the (expired) source: the bucket was enough.
    assert_eq!(w.host.hits(&small.source_path), 1);
    assert_eq!(w.host.hits(&big.source_path), 1);
    assert!(local_images(&b).is_empty(), "B keeps no image files");

    // A third replica that never saw anything, started on an empty disk.
    let c = w.replica(&[]).await;
    assert!(local_images(&c).is_empty());
    for (img, (etag, _)) in [&small, &big].into_iter().zip(&from_a) {
        let r = get(&c, img, &[]).await;
        assert_serves(&r, img, "replica with an empty disk");
        assert_eq!(r.h("etag"), etag);
    }
    assert!(
        local_images(&c).is_empty(),
        "the local path only holds the journal, access times and staging: {:?}",
        local_images(&c)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_replica_stops_the_other_serving_it() {
    let w = World::new().await;
    let revalidate = [("IMAGE_CACHE_REVALIDATE_SECS", "1")];
    let a = w.replica(&revalidate).await;
    let b = w.replica(&revalidate).await;
    let img = w
        .store(&a, "bob", "out-0.png", fixtures::PNG, "image/png")
        .await;
    w.host.expire(&img.source_path);

    // B serves it twice: the second answer comes from its memory cache.
    let before = memory_hits(&b).await;
    assert_serves(&get(&b, &img, &[]).await, &img, "B, first GET");
    assert_serves(&get(&b, &img, &[]).await, &img, "B, second GET");
    assert!(
        memory_hits(&b).await > before,
        "B's second GET must be answered from memory"
    );

    let r = fetch(
        client()
            .delete(format!(
                "{}/admin/users/bob/images/{}",
                a.admin(),
                img.hosted.image_id
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(r.status, 204, "admin DELETE on A: {}", r.text());
    assert_eq!(status_of(&a, &img).await, 410, "A after its own delete");
    assert!(
        !w.garage.keys().await.contains(&img.object_key()),
        "the object is gone from the bucket"
    );

    // B held it in memory; within the revalidation time (1 s, bounded
    // here by 10 s) it checks the bucket and stops serving it.
    let stopped = wait_until(secs(10), || async { status_of(&b, &img).await == 410 }).await;
    assert!(stopped, "B still serves a deleted image after 10 s");
    let r = get(&b, &img, &[]).await;
    // Deleted: 410 with its reason (issue 20, finding 17).
    assert_eq!(r.status, 410, "and it stays gone");
    assert_eq!(r.json()["code"], "image_gone", "{}", r.text());
    assert_eq!(r.json()["reason"], "deleted", "{}", r.text());
    assert_eq!(head(&b, &img).await.status, 410, "HEAD agrees");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_storing_the_same_source_at_once_agree() {
    let w = World::new().await;
    let settings = [
        ("PUBLIC_BASE_URL", "https://images.example.test"),
        ("IMAGE_PERSIST_TIMEOUT_MS", "60000"),
    ];
    let a = w.replica(&settings).await;
    let b = w.replica(&settings).await;

    let big = large_png(MULTIPART_SIZE, 11);
    let sources = [
        (
            "/pbxt/same/out-0.webp",
            fixtures::WEBP.to_vec(),
            "image/webp",
        ),
        ("/pbxt/same/out-1.png", big, "image/png"),
    ];
    let urls: Vec<String> = sources
        .iter()
        .map(|(p, bytes, ct)| {
            // Slow enough that both replicas are downloading at once.
            w.host.slow(p, Duration::from_millis(800));
            w.host.add_url(p, bytes.clone(), ct)
        })
        .collect();
    w.api.set_generate_json(&json!({ "output": urls }));

    let (ra, rb) = tokio::join!(generate(&a, "carol"), generate(&b, "carol"));
    assert_eq!(ra.status, 200, "A: {}", ra.text());
    assert_eq!(rb.status, 200, "B: {}", rb.text());
    let (oa, ob) = (ra.json()["output"].clone(), rb.json()["output"].clone());
    assert_eq!(oa, ob, "both replicas hand out the same hosted URLs");
    for (p, _, _) in &sources {
        assert_eq!(
            w.host.hits(p),
            2,
            "{p}: both replicas downloaded and wrote it (the double write under test)"
        );
        w.host.expire(p);
    }

    let imgs: Vec<Img> = sources
        .iter()
        .zip(oa.as_array().expect("output array"))
        .map(|((p, bytes, ct), url)| {
            let url = url.as_str().unwrap_or("");
            let hosted = parse_hosted(url).unwrap_or_else(|| panic!("{p} was not hosted: {url:?}"));
            assert_eq!(hosted.base, "https://images.example.test");
            Img {
                hosted,
                bytes: bytes.clone(),
                content_type: ct.to_string(),
                source_path: p.to_string(),
            }
        })
        .collect();

    let mut want: Vec<String> = imgs.iter().map(Img::object_key).collect();
    want.sort();
    assert_eq!(w.garage.image_keys().await, want, "one object per image");
    let c = w.replica(&[("IMAGE_MEMORY_CACHE_MB", "0")]).await;
    for img in &imgs {
        assert_object(&w, img).await;
        for (who, p) in [("A", &a), ("B", &b), ("C", &c)] {
            assert_serves(&get(p, img, &[]).await, img, who);
        }
    }
}

/// S3_FORCE_PATH_STYLE=false (AWS and R2 style) puts the bucket in the host
/// name. Garage answers `{bucket}.s3.garage.localhost` (its root_domain in
/// scripts/garage.sh); as that name does not resolve here, the replicas' S3
/// client reaches Garage as its HTTP proxy (source downloads and the upstream
/// never use a proxy). A prefix other than the bucket's name makes sure the
/// bucket really travels in the host, not as a path segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosted_addressing_names_the_bucket_in_the_host() {
    let w = World::new().await;
    let endpoint = w.garage.var("S3_ENDPOINT").to_string();
    let port = endpoint.rsplit(':').next().expect("port");
    let host_style = format!("http://s3.garage.localhost:{port}");
    let settings = [
        ("S3_ENDPOINT", host_style.as_str()),
        ("S3_FORCE_PATH_STYLE", "false"),
        ("S3_PREFIX", "vhosted/"),
        ("HTTP_PROXY", endpoint.as_str()),
        ("NO_PROXY", "example.invalid"),
        ("no_proxy", "example.invalid"),
    ];
    let r = w.replica(&settings).await;
    let ready = fetch(client().get(format!("{}/readyz", r.admin()))).await;
    assert_eq!(ready.status, 200, "/readyz: {}", ready.text());
    let img = w
        .store(&r, "ines", "out-0.png", fixtures::PNG, "image/png")
        .await;
    w.host.expire(&img.source_path);
    let key = format!("vhosted/ines/{}.png", img.hosted.image_id);
    let keys = w.garage.keys().await;
    let (bytes, _) = w
        .garage
        .object(&key)
        .await
        .unwrap_or_else(|| panic!("{key} is not in bucket images: {keys:?}"));
    assert_same_bytes(&bytes, &img.bytes, &key);

    // Another replica on an empty disk finds it and streams it from there.
    let mut more = settings.to_vec();
    more.push(("IMAGE_MEMORY_CACHE_MB", "0"));
    let other = w.replica(&more).await;
    assert_serves(&get(&other, &img, &[]).await, &img, "second replica");
}

/// Issue 12: a replica killed while its downloads are pending (slow
/// sources) leaves leases that run out; another replica claims the rows and
/// finishes them, with no request asking. Every hosted URL the dead replica
/// handed out then serves the right bytes from the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_pending_downloads_are_finished_by_another() {
    let w = World::new().await;
    let lease = [
        ("IMAGE_PERSIST_MODE", "background"),
        ("IMAGE_PENDING_LEASE_SECS", "6"),
    ];
    let mut a = w.replica(&lease).await;
    let b = w.replica(&lease).await;
    let imgs: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("/pbxt/dying-{i}.png"),
                fixtures::large_png(150_000, 700 + i),
            )
        })
        .collect();
    let srcs: Vec<String> = imgs
        .iter()
        .map(|(p, bytes)| {
            w.host.pause_mid_body(p, Duration::from_secs(30));
            w.host.add_url(p, bytes.clone(), "image/png")
        })
        .collect();
    w.api.set_generate_json(&json!({ "output": srcs }));
    let g = generate(&a, "kai").await;
    assert_eq!(g.status, 200, "{}", g.text());
    let hosted: Vec<Hosted> = (0..3)
        .map(|i| parse_hosted(g.json()["output"][i].as_str().unwrap()).expect("handed out"))
        .collect();
    // A is downloading all three (its staging files exist): kill it.
    let staging = a.storage_path().join("~staging");
    let busy = wait_until(secs(15), || async { files_under(&staging).len() == 3 }).await;
    assert!(busy, "A never started its downloads");
    a.kill9();
    let died = std::time::Instant::now();
    for (p, _) in &imgs {
        w.host.clear_faults(p);
    }
    // No request: B's takeover loop alone must store them.
    let done = wait_until(secs(60), || async {
        let db = w.db().await;
        let mut stored = 0;
        for h in &hosted {
            if db
                .row(&h.user, &h.image_id)
                .await
                .is_some_and(|r| r.0 == "stored")
            {
                stored += 1;
            }
        }
        db.close().await;
        stored == hosted.len()
    })
    .await;
    assert!(done, "B did not finish A's pending downloads");
    eprintln!(
        "takeover: A's downloads finished by B {:.1} s after A died (lease 6 s)",
        died.elapsed().as_secs_f64()
    );
    for ((p, bytes), h) in imgs.iter().zip(&hosted) {
        w.host.expire(p);
        let r = fetch(client().get(b.url(&h.path))).await;
        assert_eq!(r.status, 200, "{}: {}", h.path, r.text());
        assert_same_bytes(&r.body, bytes, &h.path);
        assert!(w.host.hits(p) >= 2, "{p}: B downloaded it again");
    }
}
