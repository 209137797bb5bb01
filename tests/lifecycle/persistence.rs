//! What survives a stop: counts and access order across restarts, an index
//! rebuilt from the images alone, and the `cleanup` CLI on a stopped store.

use crate::common::*;
use crate::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The last-request time the database holds for `img`.
async fn requested_at(p: &Proxy, img: &Img) -> Option<u64> {
    let db = p.db().await;
    let at = db.requested_at(img.user(), img.id()).await;
    db.close().await;
    at
}

/// Every file under `dir` but the embedded database's own: SQLite creates
/// and removes its -wal and -shm files as connections come and go; its rows
/// are compared by [`common::db::Db::dump`] instead.
fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().contains("permaproxy.db"))
        .collect()
}

/// Stops the proxy with SIGTERM and waits for it to exit.
async fn stop(p: &mut Proxy) {
    p.sigterm();
    let status = p.wait_exit(secs(15)).await.expect("exit after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_counts_and_access_order() {
    let mut s = stands(&[("IMAGE_PER_USER_LIMIT", "3"), TRUSTED_IDS]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let a = store_png(&s, "u1", "a.png", &fixtures::unique_png(80)).await;
    let b = store_png(&s, "u1", "b.png", &fixtures::unique_png(81)).await;
    let c = store_png(&s, "u1", "c.png", &fixtures::unique_png(82)).await;
    assert_served(&get(&s.proxy, &a).await, &a, "A");
    let before = stats_totals(&s.proxy).await;
    assert_eq!(before.0, 3);

    // Crash after the batched flush has recorded A's request: no clean stop.
    let flushed = wait_until(secs(15), || async {
        matches!(
            (requested_at(&s.proxy, &a).await, requested_at(&s.proxy, &c).await),
            (Some(ta), Some(tc)) if ta > tc
        )
    })
    .await;
    assert!(flushed, "A's request never reached the database");
    s.proxy.kill9();
    s.proxy.restart().await;
    assert_eq!(stats_totals(&s.proxy).await, before, "counts after a crash");
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 3.0);
    assert_eq!(
        s.proxy.metric("permaproxy_stored_bytes").await,
        before.1 as f64
    );
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&a, &b, &c]));

    // B, stored after A but never requested, is the one the limit takes.
    let d = store_png(&s, "u1", "d.png", &fixtures::unique_png(83)).await;
    assert_gone(&get(&s.proxy, &b).await, "B after D");
    assert_not_on_disk(&storage, &b);
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&a, &c, &d]));

    // Now request C and D, so A is the least recently requested, and stop
    // cleanly right away: SIGTERM writes the times it holds.
    assert_served(&get(&s.proxy, &c).await, &c, "C");
    assert_served(&get(&s.proxy, &d).await, &d, "D");
    s.proxy.restart().await;
    assert_eq!(stats_totals(&s.proxy).await.0, 3, "counts after a stop");
    assert_eq!(s.proxy.metric("permaproxy_stored_images").await, 3.0);
    let e = store_png(&s, "u1", "e.png", &fixtures::unique_png(84)).await;
    assert_gone(&get(&s.proxy, &a).await, "A after E");
    assert_not_on_disk(&storage, &a);
    for img in [&c, &d, &e] {
        assert_served(&get(&s.proxy, img).await, img, "kept across restarts");
    }
    assert_eq!(listed_ids(&s.proxy, "u1").await, ids(&[&c, &d, &e]));
}

/// `permaproxy reindex`: the database is lost (every image row gone), two
/// sidecars are missing and two corrupt; the command rebuilds the rows from
/// the store, the bytes decide where the sidecars lie, and every hosted URL
/// serves as before with the same ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_a_lost_database_from_the_store() {
    let mut s = stands(&[]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let mut imgs = Vec::new();
    for (i, (bytes, ct, ext)) in fixtures::all().into_iter().enumerate() {
        let user = if i % 2 == 0 { "even" } else { "odd" };
        let extra = json!({"id": format!("pred_{i}")});
        imgs.push(store_with(&s, user, &format!("lost-{i}.{ext}"), bytes, ct, extra).await);
    }
    let mut etags = Vec::new();
    for img in &imgs {
        let r = get(&s.proxy, img).await;
        assert_served(&r, img, "before the stop");
        etags.push(r.h("etag").to_string());
    }
    let stats = admin_json(&s.proxy, "/admin/stats").await;
    stop(&mut s.proxy).await;

    let db = s.proxy.db().await;
    db.wipe_images().await;
    db.close().await;
    std::fs::remove_file(sidecar_file(&storage, &imgs[0])).unwrap();
    std::fs::remove_file(sidecar_file(&storage, &imgs[1])).unwrap();
    std::fs::write(sidecar_file(&storage, &imgs[2]), b"{\"id\": \"img_").unwrap();
    let lying = sidecar_file(&storage, &imgs[3]);
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&lying).unwrap()).unwrap();
    meta["size"] = json!(imgs[3].bytes.len() + 1000);
    std::fs::write(&lying, serde_json::to_vec(&meta).unwrap()).unwrap();
    // An orphan sidecar (its image is gone) and a stray temp file.
    let orphan = storage.join("even/img_000000000000000000000000.json");
    std::fs::copy(sidecar_file(&storage, &imgs[4]), &orphan).unwrap();
    std::fs::write(storage.join("odd/.tmp-partial"), b"half a sidecar").unwrap();

    // Without the rows, nothing is served.
    s.proxy.restart().await;
    assert_gone(&get(&s.proxy, &imgs[0]).await, "before the reindex");
    stop(&mut s.proxy).await;

    let storage_s = storage.to_string_lossy().to_string();
    let env = [
        ("IMAGE_STORAGE_PATH", storage_s.as_str()),
        ("DATABASE_URL", s.proxy.database_url()),
    ];
    let (code, out, err) = Proxy::run(&["reindex"], &env, secs(60)).await;
    assert_eq!(code, 0, "reindex failed:\n{out}\n{err}");
    assert!(
        out.contains(&format!("reindexed {} image(s)", imgs.len())),
        "{out}"
    );

    s.proxy.restart().await;
    for (img, etag) in imgs.iter().zip(&etags) {
        let r = get(&s.proxy, img).await;
        assert_served(&r, img, "after the reindex");
        assert_eq!(r.h("etag"), etag, "ETag of {}", img.hosted.path);
        assert_eq!(r.h("content-length"), img.bytes.len().to_string());
    }
    let rebuilt = admin_json(&s.proxy, "/admin/stats").await;
    assert_eq!(rebuilt["images"], stats["images"], "{rebuilt} vs {stats}");
    assert_eq!(rebuilt["bytes"], stats["bytes"], "{rebuilt} vs {stats}");
    assert_eq!(rebuilt["top_users"], stats["top_users"]);
    assert_eq!(rebuilt["images"], imgs.len());
    assert_eq!(
        s.proxy.metric("permaproxy_stored_images").await,
        imgs.len() as f64
    );
    // Every sidecar is whole again and agrees with its image.
    for img in &imgs {
        let meta: Value = serde_json::from_slice(
            &std::fs::read(sidecar_file(&storage, img)).expect("sidecar rebuilt"),
        )
        .expect("sidecar is JSON");
        assert_eq!(meta["size"], img.bytes.len(), "{meta}");
        assert_eq!(meta["sha256"], sha256_hex(&img.bytes), "{meta}");
        assert_eq!(meta["content_type"], img.content_type, "{meta}");
    }
    assert!(!orphan.exists(), "an orphan sidecar is swept");
    assert!(!storage.join("odd/.tmp-partial").exists());
    // Sidecars kept whole keep what only they knew.
    let listed = admin_json(&s.proxy, "/admin/users/even/images").await;
    let kept = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == imgs[4].id())
        .cloned()
        .expect("image 4 listed");
    assert_eq!(kept["replicate_prediction_id"], "pred_4", "{kept}");
}

/// Path and bytes of every file under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_cli_dry_run_changes_nothing_and_the_real_run_deletes() {
    let png = |seed| fixtures::noise_png(40, 40, seed);
    let size = png(90).len() as u64;
    let cap = (size * 5 / 2).to_string();
    // Stored without a cap: the operator lowers it later and runs the CLI
    // (a proxy with the cap would enforce it as each image is stored).
    let mut s = stands(&[]).await;
    let storage = s.proxy.storage_path().to_path_buf();
    let mut imgs = Vec::new();
    for i in 0..4 {
        imgs.push(store_png(&s, "cli", &format!("c{i}.png"), &png(90 + i)).await);
    }
    // Make the oldest the most recently requested; 1 and 2 are then the
    // least recently requested, and the cap keeps two.
    assert_served(&get(&s.proxy, &imgs[0]).await, &imgs[0], "image 0");
    stop(&mut s.proxy).await;

    let storage_s = storage.to_string_lossy().to_string();
    let env = [
        ("IMAGE_STORAGE_PATH", storage_s.as_str()),
        ("IMAGE_STORAGE_MAX_BYTES", cap.as_str()),
        ("DATABASE_URL", s.proxy.database_url()),
    ];
    let before = snapshot_files(&storage);
    let rows_before = s.proxy.db().await.dump().await;
    let (code, out, err) = Proxy::run(&["cleanup", "--dry-run"], &env, secs(30)).await;
    assert_eq!(code, 0, "cleanup --dry-run failed:\n{out}\n{err}");
    for img in &imgs[1..3] {
        let line = out
            .lines()
            .find(|l| l.contains(img.id()))
            .unwrap_or_else(|| panic!("{} not in the dry run:\n{out}", img.id()));
        assert!(line.contains("would delete"), "{line}");
        assert!(line.contains("storage_cap"), "{line}");
        assert!(line.contains("cli/"), "{line}");
    }
    for img in [&imgs[0], &imgs[3]] {
        assert!(!out.contains(img.id()), "{} listed:\n{out}", img.id());
    }
    assert!(out.contains("would delete 2 image(s)"), "{out}");
    let after = snapshot_files(&storage);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(changed.is_empty(), "the dry run changed {changed:?}");
    assert_eq!(
        s.proxy.db().await.dump().await,
        rows_before,
        "the dry run changed rows"
    );

    let (code, out, err) = Proxy::run(&["cleanup"], &env, secs(30)).await;
    assert_eq!(code, 0, "cleanup failed:\n{out}\n{err}");
    for img in &imgs[1..3] {
        let line = out
            .lines()
            .find(|l| l.contains(img.id()))
            .unwrap_or_else(|| panic!("{} not deleted:\n{out}", img.id()));
        assert!(line.starts_with("deleted"), "{line}");
        assert!(line.contains("storage_cap"), "{line}");
        assert_not_on_disk(&storage, img);
    }
    assert!(out.contains("deleted 2 image(s)"), "{out}");
    for img in [&imgs[0], &imgs[3]] {
        assert_on_disk(&storage, img);
    }

    // A second dry run finds nothing left to do.
    let (code, out, _) = Proxy::run(&["cleanup", "--dry-run"], &env, secs(30)).await;
    assert_eq!(code, 0);
    assert!(out.contains("would delete 0 image(s)"), "{out}");

    // The proxy agrees when it comes back, now with the cap.
    s.proxy.set_env("IMAGE_STORAGE_MAX_BYTES", &cap);
    s.proxy.restart().await;
    assert_eq!(stats_totals(&s.proxy).await, (2, 2 * size));
    for img in &imgs[1..3] {
        assert_gone(&get(&s.proxy, img).await, "deleted by the CLI");
    }
    for img in [&imgs[0], &imgs[3]] {
        assert_served(&get(&s.proxy, img).await, img, "kept by the CLI");
    }
}

/// Generates as `user` with `bytes` served at `path`; in on_first_hit mode
/// this only journals the source. Returns the image handed out.
async fn hand_out(s: &Stands, user: &str, path: &str, bytes: Vec<u8>) -> Img {
    let src = s.host.add_url(path, bytes.clone(), "image/png");
    s.api.set_generate_json(&json!({"output": [src]}));
    let r = fetch(
        client()
            .post(s.proxy.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", user)
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["output"][0].as_str().unwrap().to_string();
    Img {
        hosted: parse_hosted(&url).unwrap_or_else(|| panic!("not hosted: {url}")),
        bytes,
        content_type: "image/png".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_dry_run_beside_a_live_proxy_disturbs_nothing() {
    // on_first_hit: a generate call only journals the source; the download
    // waits for the first request, so the journal is all that remembers it.
    let mut s = stands(&[
        ("IMAGE_PERSIST_MODE", "on_first_hit"),
        ("IMAGE_STORAGE_MAX_BYTES", "1"),
    ])
    .await;
    let storage = s.proxy.storage_path().to_path_buf();
    let stored = hand_out(&s, "live", "/pbxt/stored.png", fixtures::unique_png(95)).await;
    assert_served(&get(&s.proxy, &stored).await, &stored, "first hit");

    let storage_s = storage.to_string_lossy().to_string();
    let env = [
        ("IMAGE_STORAGE_PATH", storage_s.as_str()),
        ("IMAGE_STORAGE_MAX_BYTES", "1"),
        ("DATABASE_URL", s.proxy.database_url()),
    ];
    let before = snapshot_files(&storage);
    let rows_before = s.proxy.db().await.dump().await;
    let (code, out, err) = Proxy::run(&["cleanup", "--dry-run"], &env, secs(30)).await;
    assert_eq!(code, 0, "cleanup --dry-run failed:\n{out}\n{err}");
    assert!(out.contains(stored.id()), "{out}");
    assert!(out.contains("would delete 1 image(s)"), "{out}");
    assert!(
        before == snapshot_files(&storage),
        "the dry run changed files"
    );
    assert_eq!(
        s.proxy.db().await.dump().await,
        rows_before,
        "the dry run changed rows"
    );

    // The live proxy still journals durably: a URL handed out now survives
    // a crash and is fetched on its first request after the restart.
    let later = hand_out(&s, "live", "/pbxt/later.png", fixtures::unique_png(96)).await;
    s.proxy.kill9();
    s.proxy.restart().await;
    assert_served(
        &get(&s.proxy, &later).await,
        &later,
        "journaled before the crash",
    );
    assert_eq!(s.host.hits("/pbxt/later.png"), 1);
}
