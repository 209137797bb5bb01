//! A full disk: a 2 MiB tmpfs as IMAGE_STORAGE_PATH (needs root; skipped
//! with a message otherwise).

use crate::common::*;
use crate::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !crate::is_root() {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_original_urls_and_serves_what_was_stored() {
    let root = tempfile::tempdir().unwrap();
    let storage = root.path().join("small-volume");
    let _tmpfs = match Tmpfs::mount(&storage, "2m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIP a_full_disk_keeps_original_urls...: needs a 2 MiB tmpfs mounted by root ({why})"
            );
            return;
        }
    };
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let opts = opts_for(
        &api,
        &host,
        &[
            // Serve from disk, not from memory, to show reads still work.
            ("IMAGE_MEMORY_CACHE_MB", "0"),
            ("IMAGE_PER_USER_LIMIT", "0"),
        ],
    )
    .storage(&storage);
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };

    // About 1.2 MB of images fill most of the 2 MiB.
    let mut stored = Vec::new();
    for pair in 0..2u64 {
        let mut urls = Vec::new();
        let mut imgs = Vec::new();
        for k in 0..2u64 {
            let img = fixtures::large_png(300_000, 1300 + pair * 2 + k);
            urls.push(s.host.add_url(
                &format!("/disk/{pair}/out-{k}.png"),
                img.clone(),
                "image/png",
            ));
            imgs.push(img);
        }
        let out = generate_outputs(&s, &urls).await;
        for (v, img) in out.iter().zip(imgs) {
            stored.push((hosted(v), img));
        }
    }
    let errors_before = s
        .proxy
        .metric(r#"permaproxy_storage_errors_total{kind="full"}"#)
        .await;

    // A 1 MB image does not fit in what is left.
    let big = fixtures::large_png(1_000_000, 1399);
    let big_src = s
        .host
        .add_url("/disk/big/out-0.png", big.clone(), "image/png");
    let small = fixtures::unique_png(1398);
    let small_src = s
        .host
        .add_url("/disk/big/out-1.png", small.clone(), "image/png");
    let out = generate_outputs(&s, &[big_src.clone(), small_src]).await;
    assert_kept(&out[0], &big_src);
    assert!(
        s.proxy
            .metric(r#"permaproxy_storage_errors_total{kind="full"}"#)
            .await
            > errors_before,
        "the storage error is counted as full"
    );
    assert!(
        s.proxy.log_text().lines().any(|l| l.contains(&big_src)
            && l.contains("image not stored")
            && l.contains("No space left")),
        "no clear log line for the full disk"
    );
    let big_id = expected_image_id(&big_src);
    assert!(
        wait_until(secs(10), || async { staging_files(&storage).is_empty() }).await,
        "temporary files left: {:?}",
        staging_files(&storage)
    );
    let partial: Vec<_> = stored_files(&storage)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(&big_id))
        .collect();
    assert!(partial.is_empty(), "half-written files: {partial:?}");
    let temps: Vec<_> = files_under(&storage)
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".tmp-") || name.starts_with("dl-")
        })
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    let r = fetch(
        client().get(
            s.proxy
                .url(&format!("/v1/images/hosted/anonymous/{big_id}.png")),
        ),
    )
    .await;
    assert_ne!(r.status, 200, "the image that did not fit is never served");
    assert!(r.h("content-type").starts_with("application/json"));
    assert!(r.body.len() < 1000);

    // The small one beside it may or may not have fit; if it was hosted, it works.
    if let Some(h) = out[1].as_str().and_then(parse_hosted) {
        assert_serves(&get_hosted(&s.proxy, &h).await, &small, "small image");
    }
    for (h, img) in &stored {
        assert_serves(
            &get_hosted(&s.proxy, h).await,
            img,
            "stored before the disk filled",
        );
    }
    let health = fetch(client().get(format!("{}/healthz", s.proxy.admin()))).await;
    assert_eq!(health.status, 200, "the proxy is still up");
}
