//! Faults between a replica and the bucket, and what they must not leave
//! behind: a multipart upload cut mid-part is aborted (finding 9), and
//! `cleanup --dry-run` beside a live replica changes nothing (finding 6),
//! and an object shorter or longer than its row is lost, never a panic
//! (issue 20, finding 13).

use crate::common::fixtures;
use crate::common::*;
use crate::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of Garage's S3 port that cuts every connection
/// whose request carries `needle` (e.g. `partNumber=2`), mid-request, and
/// relays everything else untouched.
struct CuttingRelay {
    addr: String,
    cut: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttingRelay {
    async fn start(target: String, needle: &'static [u8]) -> CuttingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    relay(client, server, needle, counter).await;
                });
            }
        });
        CuttingRelay { addr, cut, task }
    }
}

async fn relay(client: TcpStream, server: TcpStream, needle: &[u8], cut: Arc<AtomicUsize>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(needle.len()).any(|w| w == needle) {
            cut.fetch_add(1, Ordering::SeqCst);
            break;
        }
        let keep = tail.len().saturating_sub(needle.len());
        tail.drain(..keep);
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    down.abort();
}

/// Finding 9: a multipart upload that failed mid-part (not only a killed
/// process) left its parts in the bucket. Every failure now aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_09_a_multipart_upload_failing_mid_part_is_aborted() {
    let w = World::new().await;
    let endpoint = w
        .garage
        .var("S3_ENDPOINT")
        .trim_start_matches("http://")
        .to_string();
    let relay = CuttingRelay::start(endpoint, b"partNumber=2").await;
    let r = w
        .replica(&[
            ("S3_ENDPOINT", &format!("http://{}", relay.addr)),
            ("IMAGE_MAX_BYTES", "20000000"),
        ])
        .await;
    let big = fixtures::large_png(MULTIPART_SIZE, 9);
    let src = w.source("big.png", &big, "image/png");
    let g = generate(&r, "ivy").await;
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(
        g.json()["output"][0],
        src.as_str(),
        "the upload failed: the original URL is kept"
    );
    assert!(
        relay.cut.load(Ordering::SeqCst) > 0,
        "the second part was cut"
    );
    assert!(w.garage.image_keys().await.is_empty());
    let clean = wait_until(secs(20), || async {
        w.garage.unfinished_uploads().await == 0
    })
    .await;
    assert!(
        clean,
        "{} unfinished multipart upload(s) left in the bucket",
        w.garage.unfinished_uploads().await
    );
}

/// Finding 6: `cleanup --dry-run` on S3 opened the engine: it swept the
/// staging folder (deleting a live proxy's upload in flight) and rewrote
/// shared state. Now it only reads: staging, the bucket and the database are
/// exactly as they were, and the live proxy's download completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_06_cleanup_dry_run_on_s3_changes_nothing() {
    let w = World::new().await;
    let limits = [
        ("IMAGE_PERSIST_MODE", "background"),
        ("IMAGE_STORAGE_MAX_BYTES", "1"),
    ];
    let live = w.replica(&limits).await;
    let kept = w
        .store(&live, "jo", "kept.png", fixtures::PNG, "image/png")
        .await;
    // A download in flight: the source trickles its body, so the staging
    // file exists while the dry run runs.
    let slow_bytes = fixtures::large_png(200_000, 606);
    w.source("slow.png", &slow_bytes, "image/png");
    w.host
        .pause_mid_body("/pbxt/slow.png", std::time::Duration::from_secs(4));
    let g = generate(&live, "jo").await;
    let pending = parse_hosted(g.json()["output"][0].as_str().unwrap()).expect("handed out");
    let staging = live.storage_path().join("~staging");
    let in_flight = wait_until(secs(10), || async { !files_under(&staging).is_empty() }).await;
    assert!(in_flight, "no staging file for the download in flight");

    let keys_before = w.garage.keys().await;
    let rows_before = w.db().await.dump().await;
    let staged_before = files_under(&staging);
    let mut env: Vec<(String, String)> = w.opts(&limits).env;
    env.push((
        "IMAGE_STORAGE_PATH".into(),
        live.storage_path().display().to_string(),
    ));
    let (code, out, err) = Proxy::run(&["cleanup", "--dry-run"], &as_refs(&env), secs(30)).await;
    assert_eq!(code, 0, "cleanup --dry-run failed:\n{out}\n{err}");
    assert!(
        out.contains(&kept.hosted.image_id),
        "the cap would delete it: {out}"
    );
    assert_eq!(w.garage.keys().await, keys_before, "the bucket changed");
    assert_eq!(
        w.db().await.dump().await,
        rows_before,
        "the database changed"
    );
    for f in &staged_before {
        assert!(f.exists(), "the dry run swept {} from staging", f.display());
    }
    // The live download finishes and serves.
    w.host.expire("/pbxt/kept.png");
    let stored = wait_until(secs(20), || async {
        fetch(client().get(live.url(&pending.path))).await.status == 200
    })
    .await;
    assert!(stored, "the live download did not complete");
    let r = fetch(client().get(live.url(&pending.path))).await;
    assert_same_bytes(&r.body, &slow_bytes, "the download in flight");
}

/// Issue 20, finding 13: an object shorter than its row made the memory
/// path slice past the end (a panic, a reset connection). Now a short or
/// long object is lost: downloaded again while its source answers, else
/// 404, counted either way; the disk store answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_13_s3_short_or_long_object_is_lost_not_a_panic() {
    let w = World::new().await;
    let a = w.replica(&[]).await;
    let lost = r#"permaproxy_storage_errors_total{kind="lost"}"#;
    // Short, source alive: stored again from the source.
    let short = w
        .store(
            &a,
            "sol",
            "short.png",
            &fixtures::unique_png(91),
            "image/png",
        )
        .await;
    let half = short.bytes[..short.bytes.len() / 2].to_vec();
    w.garage.overwrite(&short.object_key(), half).await;
    assert_serves(&get(&a, &short, &[]).await, &short, "downloaded again");
    let (object, _) = w.garage.object(&short.object_key()).await.expect("object");
    assert_eq!(object.len(), short.bytes.len(), "whole in the bucket again");
    assert_eq!(a.metric(lost).await, 1.0);
    // Long, source gone: 404, and the replica keeps serving.
    let long = w
        .store(
            &a,
            "sol",
            "long.png",
            &fixtures::unique_png(92),
            "image/png",
        )
        .await;
    w.host.expire(&long.source_path);
    let mut grown = long.bytes.clone();
    grown.extend_from_slice(b"not part of the image");
    w.garage.overwrite(&long.object_key(), grown).await;
    let r = get(&a, &long, &[]).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["code"], "image_not_found");
    assert_eq!(a.metric(lost).await, 2.0);
    assert_serves(&get(&a, &short, &[]).await, &short, "others still served");
}
