//! `permaproxy migrate --to s3`: from the disk store of a stopped proxy to
//! the bucket, with --dry-run, progress, verification and resume, leaving
//! the source in place; then a replica on an empty disk serves everything.

use crate::common::fixtures::{self, large_png};
use crate::common::*;
use crate::*;

/// Runs `permaproxy migrate --to s3 [extra]` on `volume`; asserts exit 0.
async fn migrate(w: &World, volume: &std::path::Path, extra: &[&str]) -> String {
    let mut env = w.garage.s3_env();
    env.push(("IMAGE_STORAGE_PATH".into(), volume.display().to_string()));
    let mut args = vec!["migrate", "--to", "s3"];
    args.extend_from_slice(extra);
    let (code, out, err) = Proxy::run(&args, &as_refs(&env), secs(60)).await;
    assert_eq!(
        code,
        0,
        "`permaproxy {}` failed\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        args.join(" ")
    );
    out
}

/// The progress line naming `img`, checked to be `[i/total] user/id.ext: ...`.
#[track_caller]
fn line_for<'a>(out: &'a str, img: &Img, total: usize) -> &'a str {
    let name = format!(
        "{}/{}.{}",
        img.hosted.user, img.hosted.image_id, img.hosted.ext
    );
    let line = out
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no progress line for {name} in:\n{out}"));
    let counter = line
        .strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .map(|(c, _)| c.to_string())
        .unwrap_or_default();
    assert!(
        counter.ends_with(&format!("/{total}")),
        "progress line {line:?} has no [n/{total}] counter"
    );
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_a_disk_store_to_s3_then_serve_it_from_the_bucket() {
    let w = World::new().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let volume = tmp.path().join("volume");

    // A single proxy on a volume, as before scaling out.
    let mut disk = Proxy::start(
        ProxyOptions::for_stands(&w.api, &w.host)
            .storage(&volume)
            .env("IMAGE_PERSIST_TIMEOUT_MS", "60000"),
    )
    .await;
    let big = large_png(MULTIPART_SIZE, 23);
    let imgs = vec![
        w.store(&disk, "frank", "m0.png", fixtures::PNG, "image/png")
            .await,
        w.store(&disk, "frank", "m1.jpg", fixtures::JPEG, "image/jpeg")
            .await,
        w.store(&disk, "grace", "m2.webp", fixtures::WEBP, "image/webp")
            .await,
        // Above the multipart threshold.
        w.store(&disk, "grace", "m3.png", &big, "image/png").await,
    ];
    let total = imgs.len();
    let mut validators = Vec::new();
    for img in &imgs {
        let r = get(&disk, img, &[]).await;
        assert_serves(&r, img, "disk proxy");
        validators.push((r.h("etag").to_string(), r.h("last-modified").to_string()));
        w.host.expire(&img.source_path);
    }
    disk.sigterm();
    assert!(
        disk.wait_exit(secs(15)).await.is_some(),
        "disk proxy did not stop"
    );
    assert!(w.garage.keys().await.is_empty(), "the bucket starts empty");
    // What a live disk proxy has on its volume mid-write: migrate only reads,
    // so it can run beside one (and again after it stops, to catch up).
    let in_flight = volume.join("frank").join(".tmp-inflight");
    std::fs::write(&in_flight, b"half an image").expect("write temp file");

    // --dry-run: reports every image and copies nothing.
    let out = migrate(&w, &volume, &["--dry-run"]).await;
    for img in &imgs {
        let line = line_for(&out, img, total);
        assert!(
            line.contains(&format!("would copy {} bytes", img.bytes.len())),
            "{line}"
        );
    }
    assert!(
        out.contains(&format!(
            "would copy {total} image(s), skipped 0 already present, 0 failed"
        )),
        "{out}"
    );
    assert!(
        w.garage.keys().await.is_empty(),
        "--dry-run wrote to the bucket: {:?}",
        w.garage.keys().await
    );
    assert!(in_flight.is_file(), "--dry-run changed the volume");

    // The real run: progress, each copy verified.
    let out = migrate(&w, &volume, &[]).await;
    for img in &imgs {
        let line = line_for(&out, img, total);
        assert!(
            line.contains(&format!("copied and verified ({} bytes)", img.bytes.len())),
            "{line}"
        );
    }
    assert!(
        out.contains(&format!(
            "copied {total} image(s), skipped 0 already present, 0 failed; the disk store was left in place"
        )),
        "{out}"
    );
    let mut want: Vec<String> = imgs.iter().map(Img::object_key).collect();
    want.sort();
    assert_eq!(w.garage.image_keys().await, want);
    for img in &imgs {
        let (bytes, _) = w.garage.object(&img.object_key()).await.expect("object");
        assert_same_bytes(&bytes, &img.bytes, &img.object_key());
    }

    // Again: it resumes, so everything already there is skipped.
    let out = migrate(&w, &volume, &[]).await;
    for img in &imgs {
        let line = line_for(&out, img, total);
        assert!(line.contains("already there, skipped"), "{line}");
    }
    assert!(
        out.contains(&format!(
            "copied 0 image(s), skipped {total} already present"
        )),
        "{out}"
    );
    // An interrupted migration: only what is missing is copied.
    w.garage.delete(&imgs[1].object_key()).await;
    let out = migrate(&w, &volume, &[]).await;
    assert!(
        line_for(&out, &imgs[1], total).contains("copied and verified"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "copied 1 image(s), skipped {} already present",
            total - 1
        )),
        "{out}"
    );

    // The source is left in place, untouched.
    assert!(
        in_flight.is_file(),
        "migrate deleted a write in progress on the volume"
    );
    for img in &imgs {
        let dir = volume.join(&img.hosted.user);
        let file = dir.join(format!("{}.{}", img.hosted.image_id, img.hosted.ext));
        let on_disk = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{} gone from the volume: {e}", file.display()));
        assert_same_bytes(&on_disk, &img.bytes, "source file after migrating");
        assert!(dir.join(format!("{}.json", img.hosted.image_id)).is_file());
    }

    // A replica on the bucket with an empty disk serves every image, with
    // the validators the disk proxy gave (metadata came along).
    let s3 = w.replica(&[]).await;
    assert!(local_images(&s3).is_empty());
    for (img, (etag, modified)) in imgs.iter().zip(&validators) {
        let r = get(&s3, img, &[]).await;
        assert_serves(&r, img, "S3 replica after migrating");
        assert_eq!(r.h("etag"), etag, "{}", img.hosted.path);
        assert_eq!(r.h("last-modified"), modified, "{}", img.hosted.path);
    }
    assert!(local_images(&s3).is_empty());
}
