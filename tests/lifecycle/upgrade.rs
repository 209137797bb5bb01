//! The first start on a store written by the previous release (16a30fb):
//! images with JSON sidecars, an fsynced journal of pending downloads, and
//! batched access times. Everything comes into the database; no pending
//! entry and no image is lost.

use crate::common::*;
use crate::*;
use serde_json::json;
use std::path::Path;

/// Unix milliseconds `ago_s` seconds before now: the previous release wrote
/// this store a moment ago, not in a year retention would already expire.
fn ms_ago(ago_s: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    now - ago_s * 1000
}

/// A store as the previous release left it, written file by file in its
/// formats (store/disk.rs sidecars, journal.rs records, index.rs times).
struct LegacyStore<'a> {
    root: &'a Path,
    journal: String,
    access: serde_json::Map<String, serde_json::Value>,
}

impl<'a> LegacyStore<'a> {
    fn new(root: &'a Path) -> LegacyStore<'a> {
        std::fs::create_dir_all(root.join("~state")).unwrap();
        LegacyStore {
            root,
            journal: String::new(),
            access: serde_json::Map::new(),
        }
    }

    /// A stored image, its sidecar, and its last request time.
    fn image(&mut self, user: &str, source: &str, bytes: &[u8], accessed: u64) -> Img {
        let id = expected_image_id(source);
        let dir = self.root.join(user);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.png")), bytes).unwrap();
        let sidecar = json!({
            "id": id, "user_id": user, "format": "png", "content_type": "image/png",
            "size": bytes.len(), "sha256": sha256_hex(bytes), "source_url": source,
            "prediction_id": "pred_legacy", "created_at": ms_ago(3600),
        });
        std::fs::write(
            dir.join(format!("{id}.json")),
            serde_json::to_vec_pretty(&sidecar).unwrap(),
        )
        .unwrap();
        self.access.insert(format!("{user}/{id}"), json!(accessed));
        img(user, &id, bytes)
    }

    /// The previous release's journal line: serde's tag first, then the
    /// fields in their declared order.
    fn pending_record(user: &str, source: &str) -> String {
        format!(
            r#"{{"op":"pending","user":"{user}","id":"{}","source":{},"prediction_id":null,"at":{}}}"#,
            expected_image_id(source),
            json!(source),
            ms_ago(60)
        )
    }

    /// A URL handed out before its bytes were stored.
    fn pending(&mut self, user: &str, source: &str) {
        self.journal.push_str(&Self::pending_record(user, source));
        self.journal.push('\n');
    }

    /// A write cut short by a full disk (no newline), then the next record
    /// appended onto it, as the previous release's journal did.
    fn torn_then_pending(&mut self, user: &str, source: &str) {
        self.journal.push_str("{\"op\":\"pending\",\"user\":\"");
        self.pending(user, source);
    }

    fn failed(&mut self, user: &str, source: &str) {
        let pending: serde_json::Value =
            serde_json::from_str(&Self::pending_record(user, source)).unwrap();
        let mut pending = pending.as_object().unwrap().clone();
        pending.remove("op");
        self.journal.push_str(
            &json!({"op": "failed", "pending": pending, "reason": "source answered 404", "at": ms_ago(30)})
                .to_string(),
        );
        self.journal.push('\n');
    }

    fn write(&self) {
        std::fs::write(self.root.join("~state/journal.jsonl"), &self.journal).unwrap();
        std::fs::write(
            self.root.join("~state/access.json"),
            serde_json::to_vec(&self.access).unwrap(),
        )
        .unwrap();
    }
}

fn img(user: &str, id: &str, bytes: &[u8]) -> Img {
    Img {
        hosted: parse_hosted(&format!("/v1/images/hosted/{user}/{id}.png")).unwrap(),
        bytes: bytes.to_vec(),
        content_type: "image/png".into(),
    }
}

async fn start_on(host: &FileHost, api: &StudioApi, storage: &Path) -> Proxy {
    let opts = ProxyOptions::for_stands(api, host)
        .env("ADMIN_TOKEN", TOKEN)
        .storage(storage);
    Proxy::start(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_imports_a_store_the_previous_release_wrote() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let mut legacy = LegacyStore::new(&root);
    let (t_old, t_new) = (ms_ago(1800), ms_ago(600));
    let old = legacy.image(
        "amy",
        &host.url("/old/a.png"),
        &fixtures::unique_png(700),
        t_old,
    );
    let newer = legacy.image(
        "amy",
        &host.url("/old/b.png"),
        &fixtures::unique_png(701),
        t_new,
    );
    // Handed out, not stored: the sources still live.
    let p1 = fixtures::unique_png(702);
    let p1_src = host.add_url("/pend/1.png", p1.clone(), "image/png");
    legacy.pending("bo", &p1_src);
    let gone_src = host.url("/pend/gone.png");
    legacy.failed("bo", &gone_src);
    legacy.write();

    let proxy = start_on(&host, &api, &root).await;
    // The pending image is downloaded at start, without a request.
    let storage = proxy.storage_path().to_path_buf();
    let p1_img = img("bo", &expected_image_id(&p1_src), &p1);
    let fetched = wait_until(secs(20), || async {
        !files_of(&storage, &p1_img).is_empty()
    })
    .await;
    assert!(fetched, "the pending entry was not downloaded");
    host.expire("/pend/1.png");
    assert_served(
        &get(&proxy, &p1_img).await,
        &p1_img,
        "pending before the upgrade",
    );
    for i in [&old, &newer] {
        let r = get(&proxy, i).await;
        assert_served(&r, i, "stored before the upgrade");
        assert_eq!(r.h("etag"), format!("\"{}\"", &sha256_hex(&i.bytes)[..32]));
    }
    let failed = get(&proxy, &img("bo", &expected_image_id(&gone_src), b"")).await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    assert_eq!(failed.json()["code"], "image_unavailable");
    // Request times and sidecar metadata came along.
    let db = proxy.db().await;
    assert_eq!(db.requested_at("amy", old.id()).await, Some(t_old));
    assert_eq!(db.requested_at("amy", newer.id()).await, Some(t_new));
    db.close().await;
    let listed = admin_json(&proxy, "/admin/users/amy/images").await;
    assert_eq!(
        listed["images"][0]["replicate_prediction_id"],
        "pred_legacy"
    );
    // The journal is kept, renamed, so nothing imports it twice.
    assert!(!root.join("~state/journal.jsonl").exists());
    assert!(root.join("~state/journal.jsonl.imported").exists());
}

/// Finding 2: a failed or short journal write (ENOSPC mid-line) left a
/// fragment with no newline; the next record was appended onto it, and at
/// replay the merged line was skipped, so a hosted URL handed out was never
/// recovered. Every complete record is now kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_02_a_record_appended_to_a_torn_journal_line_is_recovered() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let mut legacy = LegacyStore::new(&root);
    let bytes = fixtures::unique_png(710);
    let src = host.add_url("/torn/after.png", bytes.clone(), "image/png");
    legacy.torn_then_pending("cy", &src);
    legacy.write();
    let proxy = start_on(&host, &api, &root).await;
    let i = img("cy", &expected_image_id(&src), &bytes);
    let storage = proxy.storage_path().to_path_buf();
    let fetched = wait_until(secs(20), || async { !files_of(&storage, &i).is_empty() }).await;
    assert!(fetched, "the record after the torn fragment was lost");
    host.expire("/torn/after.png");
    assert_served(
        &get(&proxy, &i).await,
        &i,
        "recovered from the torn journal",
    );
}
