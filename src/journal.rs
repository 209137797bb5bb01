//! The journal of hosted URLs handed out before their bytes were stored.
//!
//! A `pending` record is appended and fsynced before a rewritten response
//! leaves the proxy, so after a crash every such URL can be downloaded again
//! from its source. `done` and `failed` close a record. The file is
//! compacted at start, keeping only what is still open or failed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ids::{ImageId, ImageKey, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub user: String,
    pub id: String,
    pub source: String,
    #[serde(default)]
    pub prediction_id: Option<String>,
    /// Unix milliseconds.
    pub at: u64,
}

impl PendingEntry {
    pub fn key(&self) -> Option<ImageKey> {
        Some(ImageKey::new(
            UserId::parse(&self.user)?,
            ImageId::parse(&self.id)?,
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedEntry {
    pub pending: PendingEntry,
    pub reason: String,
    pub at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Pending(PendingEntry),
    Done {
        user: String,
        id: String,
    },
    Failed(FailedEntry),
    /// An operator deleted the image: forget it entirely.
    Forget {
        user: String,
        id: String,
    },
}

#[derive(Default)]
struct State {
    pending: HashMap<ImageKey, PendingEntry>,
    failed: HashMap<ImageKey, FailedEntry>,
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock must not take the journal
    // down with it: the data is still consistent line by line.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Replays and compacts the journal in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.jsonl");
        let state = replay(&path)?;
        let mut compact = Vec::new();
        for p in state.pending.values() {
            push_line(&mut compact, &Record::Pending(p.clone()));
        }
        for f in state.failed.values() {
            push_line(&mut compact, &Record::Failed(f.clone()));
        }
        crate::store::disk::write_atomic(&path, &compact)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
            state: Mutex::new(state),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records URLs about to be handed out. Returns once they are on
    /// disk. Entries already pending are not written again.
    pub async fn add_pending(
        self: &std::sync::Arc<Self>,
        entries: Vec<PendingEntry>,
    ) -> std::io::Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.add_pending_blocking(entries))
            .await
            .map_err(std::io::Error::other)?
    }

    fn add_pending_blocking(&self, entries: Vec<PendingEntry>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut fresh = Vec::new();
        {
            let state = lock(&self.state);
            for e in entries {
                let Some(key) = e.key() else { continue };
                if !state.pending.contains_key(&key) {
                    push_line(&mut buf, &Record::Pending(e.clone()));
                    fresh.push((key, e));
                }
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        {
            let mut file = lock(&self.file);
            file.write_all(&buf)?;
            file.sync_data()?;
        }
        let mut state = lock(&self.state);
        for (key, e) in fresh {
            state.failed.remove(&key);
            state.pending.insert(key, e);
        }
        Ok(())
    }

    /// Closes a pending record. Not fsynced: if it is lost, recovery finds
    /// the image already stored and closes it again.
    pub fn mark_done(&self, key: &ImageKey) {
        let was_open = {
            let mut state = lock(&self.state);
            state.failed.remove(key);
            state.pending.remove(key).is_some()
        };
        if was_open {
            self.append(&Record::Done {
                user: key.user.to_string(),
                id: key.id.to_string(),
            });
        }
    }

    /// Records a final failure, kept for an operator to see.
    pub fn mark_failed(&self, key: &ImageKey, reason: &str) {
        let entry = {
            let mut state = lock(&self.state);
            let Some(pending) = state.pending.remove(key) else {
                return;
            };
            let entry = FailedEntry {
                pending,
                reason: reason.to_string(),
                at: crate::hosting::now_ms(),
            };
            state.failed.insert(key.clone(), entry.clone());
            entry
        };
        self.append(&Record::Failed(entry));
    }

    pub fn forget(&self, key: &ImageKey) {
        {
            let mut state = lock(&self.state);
            state.pending.remove(key);
            state.failed.remove(key);
        }
        self.append(&Record::Forget {
            user: key.user.to_string(),
            id: key.id.to_string(),
        });
    }

    pub fn pending(&self, key: &ImageKey) -> Option<PendingEntry> {
        lock(&self.state).pending.get(key).cloned()
    }

    pub fn failed(&self, key: &ImageKey) -> Option<FailedEntry> {
        lock(&self.state).failed.get(key).cloned()
    }

    pub fn all_pending(&self) -> Vec<PendingEntry> {
        lock(&self.state).pending.values().cloned().collect()
    }

    pub fn all_failed(&self) -> Vec<FailedEntry> {
        lock(&self.state).failed.values().cloned().collect()
    }

    pub fn pending_count(&self) -> usize {
        lock(&self.state).pending.len()
    }

    fn append(&self, record: &Record) {
        let mut buf = Vec::new();
        push_line(&mut buf, record);
        if let Err(e) = lock(&self.file).write_all(&buf) {
            tracing::error!(error = %e, "journal append failed");
        }
    }
}

fn push_line(buf: &mut Vec<u8>, record: &Record) {
    if serde_json::to_writer(&mut *buf, record).is_ok() {
        buf.push(b'\n');
    }
}

fn replay(path: &Path) -> std::io::Result<State> {
    let mut state = State::default();
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
        Err(e) => return Err(e),
    };
    // A torn last line after a crash is expected; skip anything unreadable.
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(record) = serde_json::from_slice::<Record>(line) else {
            continue;
        };
        match record {
            Record::Pending(p) => {
                if let Some(k) = p.key() {
                    state.failed.remove(&k);
                    state.pending.insert(k, p);
                }
            }
            Record::Failed(f) => {
                if let Some(k) = f.pending.key() {
                    state.pending.remove(&k);
                    state.failed.insert(k, f);
                }
            }
            Record::Done { user, id } | Record::Forget { user, id } => {
                if let (Some(u), Some(i)) = (UserId::parse(&user), ImageId::parse(&id)) {
                    let k = ImageKey::new(u, i);
                    state.pending.remove(&k);
                    state.failed.remove(&k);
                }
            }
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(n: u32) -> PendingEntry {
        let source = format!("https://replicate.delivery/{n}.png");
        PendingEntry {
            user: "u1".into(),
            id: ImageId::for_source(&source).to_string(),
            source,
            prediction_id: None,
            at: 1,
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(dir.path()).unwrap());
        j.add_pending(vec![entry(1), entry(2), entry(3)])
            .await
            .unwrap();
        j.mark_done(&entry(1).key().unwrap());
        j.mark_failed(&entry(2).key().unwrap(), "source answered 404");
        drop(j);
        // A torn line from a crash mid-append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.jsonl"))
            .unwrap();
        f.write_all(b"{\"op\":\"pend").unwrap();
        drop(f);

        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.all_pending(), vec![entry(3)]);
        assert_eq!(
            j.failed(&entry(2).key().unwrap()).unwrap().reason,
            "source answered 404"
        );
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert_eq!(text.lines().count(), 2, "compacted: {text}");
    }
}
