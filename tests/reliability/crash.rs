//! `kill -9` with downloads in flight, and the staging sweep at start.

use crate::common::*;
use crate::raw::{Answer, RawSource};
use crate::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_background_downloads_loses_no_image() {
    let mut s = stands(&[("IMAGE_PERSIST_MODE", "background")]).await;
    let n = 6;
    let imgs: Vec<Vec<u8>> = (0..n).map(|i| fixtures::unique_png(1000 + i)).collect();
    let paths: Vec<String> = (0..n).map(|i| format!("/k9/p{i}/out-0.png")).collect();
    let mut urls = Vec::new();
    for (path, img) in paths.iter().zip(&imgs) {
        urls.push(s.host.add_url(path, img.clone(), "image/png"));
        s.host.slow(path, Duration::from_secs(30));
    }
    let mut hs = Vec::new();
    for pair in urls.chunks(2) {
        hs.extend(generate_outputs(&s, pair).await.iter().map(hosted));
    }
    assert_eq!(hs.len(), n as usize);
    // Every download is in flight (the source has the request) when killed.
    assert!(
        wait_until(secs(20), || async {
            paths.iter().all(|p| s.host.hits(p) == 1)
        })
        .await,
        "downloads did not start"
    );
    s.proxy.kill9();
    let storage = s.proxy.storage_path().to_path_buf();
    for h in &hs {
        assert!(!is_stored(&storage, &h.image_id));
    }
    // After the restart the sources answer again, a little slowly, so a
    // request can arrive while recovery downloads.
    for p in &paths {
        s.host.slow(p, Duration::from_millis(800));
    }

    s.proxy.restart().await;
    // A request for one image during recovery joins its download.
    assert_serves(
        &get_hosted(&s.proxy, &hs[0]).await,
        &imgs[0],
        "requested during recovery",
    );
    assert!(
        wait_until(secs(30), || async {
            hs.iter().all(|h| is_stored(&storage, &h.image_id))
        })
        .await,
        "not every handed-out image was stored after the restart; stored: {:?}",
        stored_files(&storage)
    );
    assert_eq!(
        s.proxy.metric("permaproxy_hosted_requests_total").await,
        1.0,
        "all but the first stored with no request touching them"
    );
    for p in &paths {
        assert_eq!(s.host.hits(p), 2, "{p}: once before the kill, once after");
        s.host.expire(p);
    }
    for (h, img) in hs.iter().zip(&imgs) {
        assert_serves(&get_hosted(&s.proxy, h).await, img, "after kill -9");
    }
    assert!(staging_files(&storage).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_body_leaves_a_staging_file_that_the_next_start_removes() {
    let img = fixtures::large_png(200_000, 1100);
    let body = img.clone();
    let src = RawSource::start(move |n| {
        if n == 0 {
            Answer::Stall(body.clone(), body.len() / 2)
        } else {
            Answer::Full(body.clone())
        }
    })
    .await;
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = ProxyOptions::new(&api.url())
        .env("REPLICATE_HOSTS", &src.addr)
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
        .env("IMAGE_PERSIST_MODE", "background");
    let proxy = Proxy::start(opts).await;
    let mut s = Stands { host, api, proxy };
    let storage = s.proxy.storage_path().to_path_buf();
    let url = src.url("/stall/out-0.png");
    let out = generate_outputs(&s, std::slice::from_ref(&url)).await;
    let h = hosted(&out[0]);
    assert!(
        wait_until(secs(20), || async {
            staging_files(&storage)
                .iter()
                .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
        })
        .await,
        "the partial download never reached staging"
    );
    s.proxy.kill9();
    let leftovers = staging_files(&storage);
    assert!(!leftovers.is_empty(), "kill -9 leaves the partial file");

    s.proxy.restart().await;
    assert!(
        wait_until(secs(20), || async { is_stored(&storage, &h.image_id) }).await,
        "recovery did not store the image"
    );
    for f in &leftovers {
        assert!(!f.exists(), "{} not swept at start", f.display());
    }
    assert_eq!(src.requests(), 2);
    assert_serves(&get_hosted(&s.proxy, &h).await, &img, "recovered whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_temporary_files_are_removed_at_start() {
    let root = tempfile::tempdir().unwrap();
    let storage = root.path().join("store");
    let staging = storage.join("~staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(storage.join("anonymous")).unwrap();
    let junk = [
        staging.join("dl-a1b2c3"),
        staging.join(".tmp-x9"),
        staging.join("img_0123456789abcdef01234567.png"),
        storage.join("anonymous").join(".tmp-sidecar"),
    ];
    for f in &junk {
        std::fs::write(f, b"half a file from a crash").unwrap();
    }
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let proxy = Proxy::start(ProxyOptions::for_stands(&api, &host).storage(&storage)).await;
    let s = Stands { host, api, proxy };
    for f in &junk {
        assert!(!f.exists(), "{} left in place", f.display());
    }
    // The store still works afterwards.
    let img = fixtures::unique_png(1200);
    let src = s.host.add_url("/after/out-0.png", img.clone(), "image/png");
    let out = generate_outputs(&s, &[src]).await;
    assert_serves(
        &get_hosted(&s.proxy, &hosted(&out[0])).await,
        &img,
        "new image",
    );
}
