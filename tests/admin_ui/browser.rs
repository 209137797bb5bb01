//! The admin page in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (`browser.mjs`, run with node). This side starts the
//! real binary, fills it, hands the script its plan, and checks what the
//! script cannot see: the downloaded zip, byte for byte.
//!
//! It fails (never skips) when Chromium or playwright-core is missing:
//! `scripts/setup.sh` installs both.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::common::*;
use crate::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admin_ui")
}

/// Where the screenshots go: `docs/screenshots` when refreshing them
/// (`PERMAPROXY_UPDATE_SCREENSHOTS=1`), else the target folder, so a test
/// run does not leave the work tree changed.
fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var("PERMAPROXY_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/admin-ui-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}

fn check_tools() -> String {
    let chromium = std::env::var("PERMAPROXY_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: run scripts/setup.sh (it installs Debian's chromium)"
    );
    assert!(
        here()
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing: run scripts/setup.sh (npm ci in tests/admin_ui)"
    );
    chromium
}

/// Requests the images now and then while the test runs, so the overview's
/// charts and top list have something to show. Bounded: it stops when
/// told, and after 600 requests at most.
fn traffic(p: &Proxy, paths: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let base = p.base();
    tokio::spawn(async move {
        let c = client();
        for n in 0..600usize {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // A skewed mix: the first images are the popular ones.
            let i = (n * n + n / 3) % paths.len();
            let _ = c.get(format!("{base}{}", paths[i.min(n % 3)])).send().await;
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    })
}

/// How many samples the overview's first chart shows.
async fn chart_samples(p: &Proxy, cookie: &str) -> usize {
    let html = page(p, cookie, "/admin/ui").await.text();
    html.split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map_or(0, |pts| pts.split(' ').count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_in_a_real_browser() {
    let chromium = check_tools();
    let s = stands(&[("IMAGE_PERSIST_MODE", "background")]).await;
    let p = &s.proxy;

    // A gallery of six, a user of three to export, and one whose rows hold
    // hostile text (as an older release's journal could).
    let mut ada = Vec::new();
    for i in 0..6 {
        ada.push(store(&s, "ada", &format!("a{i}.png"), "", crate::art::png(i, 320)).await);
    }
    let mut cy = Vec::new();
    for i in 0..3 {
        cy.push(
            store(
                &s,
                "cy",
                &format!("c{i}.png"),
                "",
                crate::art::png(40 + i, 200),
            )
            .await,
        );
    }
    let eve = store(&s, "eve", "e.png", "", crate::art::png(60, 128)).await;
    let failed = fail_one(&s, "eve", "gone.png").await;
    let db = p.db().await;
    let cond = format!("image_id = '{failed}' AND state = 'failed'");
    assert!(wait_until(secs(20), || async { db.count(&cond).await == 1 }).await);
    db.close().await;
    make_hostile(p, "eve", &failed).await;
    make_hostile(p, "eve", eve.id()).await;
    let stored = |img: &Img| {
        let path = img.hosted.path.clone();
        async move { fetch(client().get(p.url(&path))).await.status == 200 }
    };
    for img in ada.iter().chain(&cy) {
        assert!(
            wait_until(secs(20), || stored(img)).await,
            "{} stored",
            img.id()
        );
    }

    // Traffic for the charts; wait for three samples (30 s) so the
    // overview's screenshot shows lines, not dots.
    let stop = Arc::new(AtomicBool::new(false));
    let popular: Vec<String> = ada
        .iter()
        .chain(&cy)
        .map(|i| i.hosted.path.clone())
        .collect();
    let load = traffic(p, popular, stop.clone());
    let session = login(p).await;
    assert!(
        wait_until(secs(90), || async { chart_samples(p, &session).await >= 3 }).await,
        "the charts never got three samples"
    );
    assert!(wait_views(p, "ada", ada[0].id(), 1).await);

    let downloads = tempfile::tempdir().expect("tempdir");
    let plan = json!({
        "chromium": chromium,
        "admin": p.admin(),
        "public": p.base(),
        "token": TOKEN,
        "gallery_user": "ada",
        "gallery_count": ada.len(),
        "delete_id": ada[5].id(),
        "delete_path": ada[5].hosted.path,
        "keep_id": ada[4].id(),
        "keep_path": ada[4].hosted.path,
        "export_user": "cy",
        "hostile_user": "eve",
        "hostile_id": failed,
        "hostile_text": HOSTILE,
        "screenshots": screenshot_dir(),
        "downloads": downloads.path(),
    });
    let out = Command::new("node")
        .arg(here().join("browser.mjs"))
        .current_dir(here())
        .env("PP_UI_PLAN", plan.to_string())
        .output()
        .expect("run node (scripts/setup.sh installs it)");
    stop.store(true, Ordering::SeqCst);
    let _ = load.await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser.mjs failed ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let result: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no RESULT line\n{stdout}\n{stderr}"));
    assert_eq!(result["thumbnails"], ada.len());

    // 3: the image deleted in the browser is gone for everyone.
    let gone = fetch(client().get(p.url(&ada[5].hosted.path))).await;
    assert_eq!(gone.status, 410, "deleted: image_gone");
    // 5: the zip the button downloaded holds the three originals.
    assert_eq!(result["zip_name"], "cy-images.zip");
    let zip = std::fs::read(result["zip"].as_str().unwrap_or_default()).expect("the download");
    assert_export(&zip, "cy", &cy.iter().collect::<Vec<_>>());
    for shot in ["overview.png", "gallery.png"] {
        let png = std::fs::read(screenshot_dir().join(shot)).expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
}
