//! Stores written by earlier versions, and `permaproxy reindex`.
//!
//! Before the database, metadata lived in sidecars (disk) or object
//! metadata (S3), with pending downloads in a fsynced journal and request
//! times in `~state/access.json` (or one JSON object per replica under the
//! bucket's `~state/access/`). The first start of this version imports all
//! of it, once: no pending entry and no image is lost.

use std::collections::HashMap;

use serde::Deserialize;

use crate::clock::now_ms;
use crate::config::Config;
use crate::hosting::handout::guess_format;
use crate::ids::{ImageId, ImageKey, UserId};
use crate::repo::{Cursor, ImageRecord, ImageState, Repo};
use crate::store::Store;

const IMPORTED: &str = "legacy_import";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PendingEntry {
    pub user: String,
    pub id: String,
    pub source: String,
    #[serde(default)]
    pub prediction_id: Option<String>,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FailedEntry {
    pub pending: PendingEntry,
    pub reason: String,
    pub at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Pending(PendingEntry),
    Done { user: String, id: String },
    Failed(FailedEntry),
    Forget { user: String, id: String },
}

fn key(user: &str, id: &str) -> Option<ImageKey> {
    Some(ImageKey::new(UserId::parse(user)?, ImageId::parse(id)?))
}

/// What a journal says is still open.
#[derive(Debug, Default)]
pub struct Replayed {
    pub pending: HashMap<ImageKey, PendingEntry>,
    pub failed: HashMap<ImageKey, FailedEntry>,
}

impl Replayed {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Pending(p) => {
                if let Some(k) = key(&p.user, &p.id) {
                    self.failed.remove(&k);
                    self.pending.insert(k, p);
                }
            }
            Record::Failed(f) => {
                if let Some(k) = key(&f.pending.user, &f.pending.id) {
                    self.pending.remove(&k);
                    self.failed.insert(k, f);
                }
            }
            Record::Done { user, id } | Record::Forget { user, id } => {
                if let Some(k) = key(&user, &id) {
                    self.pending.remove(&k);
                    self.failed.remove(&k);
                }
            }
        }
    }
}

/// Replays a journal, keeping every complete record. A write cut short
/// (disk full mid-line) left a fragment with no newline, and the next
/// record was appended onto it: such a line is searched for records that
/// start inside it, so the record after the fragment is not lost.
pub fn replay_journal(text: &[u8]) -> Replayed {
    let mut out = Replayed::default();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Ok(r) = serde_json::from_slice::<Record>(line) {
            out.apply(r);
            continue;
        }
        // The record, if any, runs to the end of the line and starts at
        // one of its braces: the first that parses is it.
        let starts = memchr::memchr_iter(b'{', line).filter(|at| *at > 0);
        for at in starts {
            if let Ok(r) = serde_json::from_slice::<Record>(&line[at..]) {
                out.apply(r);
                break;
            }
        }
    }
    out
}

/// Request times an older version kept: `{"user/img_…": ms}`.
fn access_times(blobs: &[&[u8]]) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for b in blobs {
        if let Ok(map) = serde_json::from_slice::<HashMap<String, u64>>(b) {
            for (k, t) in map {
                let e = out.entry(k).or_default();
                *e = (*e).max(t);
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The store cannot be listed right now (a bucket outage): try later.
    #[error("cannot list the store to import it: {0}")]
    Store(String),
    #[error("importing the store into the database: {0}")]
    Database(String),
}

/// Imports an older version's store into the database, once.
pub async fn import_legacy(
    cfg: &Config,
    repo: &dyn Repo,
    store: &dyn Store,
) -> Result<(), ImportError> {
    let db = |e: crate::repo::RepoError| ImportError::Database(e.to_string());
    if repo.meta_get(IMPORTED).await.map_err(db)?.is_some() {
        return Ok(());
    }
    let state = cfg.storage.path.join("~state");
    let journal_path = state.join("journal.jsonl");
    let journal = std::fs::read(&journal_path).unwrap_or_default();
    let mut blobs: Vec<Vec<u8>> = std::fs::read(state.join("access.json"))
        .into_iter()
        .collect();
    match store.legacy_state("access/").await {
        Ok(shared) => blobs.extend(shared.into_iter().map(|b| b.to_vec())),
        Err(e) => tracing::warn!(error = %e, "could not read shared access times to import"),
    }
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let times = access_times(&refs);
    // A bucket that cannot be listed right now: the import is tried again
    // later, never marked done incomplete.
    let images = store
        .list()
        .await
        .map_err(|e| ImportError::Store(e.to_string()))?;
    for meta in &images {
        let at = times.get(&meta.key.to_string()).copied().unwrap_or(0);
        repo.upsert_stored(meta, at, false).await.map_err(db)?;
    }
    let replayed = replay_journal(&journal);
    let now = now_ms();
    for (k, p) in &replayed.pending {
        repo.upsert_record(&legacy_record(k, p, ImageState::Pending, None, now))
            .await
            .map_err(db)?;
    }
    for (k, f) in &replayed.failed {
        let rec = legacy_record(k, &f.pending, ImageState::Failed, Some(f), now);
        repo.upsert_record(&rec).await.map_err(db)?;
    }
    let summary = format!(
        "{} images, {} pending, {} failed, imported at {now}",
        images.len(),
        replayed.pending.len(),
        replayed.failed.len()
    );
    repo.meta_set(IMPORTED, &summary).await.map_err(db)?;
    if !journal.is_empty() {
        let _ = std::fs::rename(&journal_path, state.join("journal.jsonl.imported"));
        tracing::info!(%summary, "imported the store written by an earlier version");
    }
    Ok(())
}

fn legacy_record(
    key: &ImageKey,
    p: &PendingEntry,
    state: ImageState,
    failed: Option<&FailedEntry>,
    now: u64,
) -> ImageRecord {
    ImageRecord {
        key: key.clone(),
        state,
        format: guess_format(&p.source),
        size: 0,
        sha256: String::new(),
        width: None,
        height: None,
        source_url: Some(p.source.clone()),
        prediction_id: p.prediction_id.clone(),
        created_at: p.at,
        stored_at: None,
        requested_at: p.at,
        views: 0,
        attempts: u32::from(failed.is_some()),
        last_error: failed.map(|f| f.reason.clone()),
        failed_at: failed.map(|f| f.at),
        // Pending: due now, so the first maintenance pass downloads it.
        due_at: now,
        lease_owner: None,
        lease_until: 0,
        private: false,
        trusted: false,
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReindexReport {
    pub found: usize,
    pub missing_rows_removed: usize,
}

/// Rebuilds the database from the store, for disaster recovery: every
/// object becomes a stored row (request times already in the database are
/// kept), and stored rows whose object is gone are removed.
pub async fn reindex(repo: &dyn Repo, store: &dyn Store) -> Result<ReindexReport, String> {
    let listed = store
        .list()
        .await
        .map_err(|e| format!("cannot list the store: {e}"))?;
    let mut present = std::collections::HashSet::new();
    for meta in &listed {
        repo.upsert_stored(meta, 0, false)
            .await
            .map_err(|e| format!("{}: {e}", meta.key))?;
        present.insert(meta.key.clone());
    }
    let mut gone = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = repo
            .stored_page(cursor.as_ref(), 500)
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() == 500;
        for r in page {
            cursor = Some(Cursor {
                at: r.requested_at,
                key: r.key.clone(),
            });
            if !present.contains(&r.key) {
                gone.push(r.key);
            }
        }
        if !full {
            break;
        }
    }
    repo.delete_images(&gone, crate::repo::GoneReason::Deleted)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ReindexReport {
        found: listed.len(),
        missing_rows_removed: gone.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: u32) -> String {
        let source = format!("https://replicate.delivery/{n}.png");
        let id = ImageId::for_source(&source);
        format!(r#"{{"op":"pending","user":"u1","id":"{id}","source":"{source}","at":{n}}}"#)
    }

    #[test]
    fn a_record_appended_onto_a_torn_fragment_is_kept() {
        // Finding 2: ENOSPC cut a write mid-line; the next fsynced record
        // was appended onto the fragment.
        let text = format!(
            "{}\n{{\"op\":\"pend{}\n{}\n{{\"user\":\"u1\",\"op{}\n",
            pending(1),
            pending(2),
            pending(3),
            pending(4)
                .replace("\"op\":\"pending\",", "")
                .replacen('{', "{\"op\":\"pending\",", 1)
        );
        let r = replay_journal(text.as_bytes());
        assert_eq!(r.pending.len(), 4, "{:?}", r.pending.keys());
    }

    #[test]
    fn done_failed_and_forget_close_records() {
        let done_id = ImageId::for_source("https://replicate.delivery/1.png");
        let text = format!(
            "{}\n{}\n{}\n{{\"op\":\"done\",\"user\":\"u1\",\"id\":\"{done_id}\"}}\n{{\"op\":\"failed\",\"pending\":{},\"reason\":\"404\",\"at\":9}}\n{{\"op\":\"pen",
            pending(1),
            pending(2),
            pending(3),
            &pending(2)[..].replace("{\"op\":\"pending\",", "{")
        );
        let r = replay_journal(text.as_bytes());
        assert_eq!(r.pending.len(), 1);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed.values().next().unwrap().reason, "404");
    }

    #[test]
    fn access_times_take_the_newest() {
        let a = br#"{"u/img_000000000000000000000000": 5}"#;
        let b = br#"{"u/img_000000000000000000000000": 9, "x": 1}"#;
        let t = access_times(&[a, b, b"not json"]);
        assert_eq!(t["u/img_000000000000000000000000"], 9);
    }
}
