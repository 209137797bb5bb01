//! Storage lifecycle: retention by last request, the per-user limit and the
//! disk cap. The decision is a pure function over index rows; applying it
//! goes through [`Hosting::delete`], so memory, index, store and journal
//! always agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::hosting::{now_ms, Hosting};
use crate::ids::{ImageKey, UserId};
use crate::index::Row;
use crate::metrics;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not requested for IMAGE_MAX_AGE_DAYS.
    Expired,
    /// Beyond IMAGE_PER_USER_LIMIT for its user.
    UserLimit,
    /// Stored bytes over IMAGE_STORAGE_MAX_BYTES.
    StorageCap,
    /// Free disk below IMAGE_MIN_FREE_BYTES.
    MinFree,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::UserLimit => "user_limit",
            Reason::StorageCap => "storage_cap",
            Reason::MinFree => "min_free",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub max_age: Duration,
    pub per_user_limit: usize,
    pub max_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deletion {
    pub user_id: String,
    pub id: String,
    pub size_bytes: u64,
    pub reason: Reason,
}

/// Decides what to delete. Rules apply in order (retention, per-user limit,
/// then the disk cap), each to what the previous ones left; an image goes if
/// any rule says so, reported with the first rule that did.
pub fn plan(
    mut rows: Vec<Row>,
    now: u64,
    rules: &Rules,
    free_bytes: Option<u64>,
) -> Vec<(Row, Reason)> {
    let mut out = Vec::new();
    let max_age_ms = rules.max_age.as_millis().min(u64::MAX as u128) as u64;
    rows.retain(|r| {
        let idle = now.saturating_sub(r.accessed_ms);
        if idle >= max_age_ms {
            out.push((r.clone(), Reason::Expired));
            false
        } else {
            true
        }
    });
    // Most recently requested first, ties broken by key for determinism.
    rows.sort_by(|a, b| {
        b.accessed_ms
            .cmp(&a.accessed_ms)
            .then_with(|| a.key.cmp(&b.key))
    });
    if rules.per_user_limit > 0 {
        let mut per_user: HashMap<UserId, usize> = HashMap::new();
        rows.retain(|r| {
            let n = per_user.entry(r.key.user.clone()).or_default();
            *n += 1;
            if *n > rules.per_user_limit {
                out.push((r.clone(), Reason::UserLimit));
                false
            } else {
                true
            }
        });
    }
    let mut total: u64 = rows.iter().map(|r| r.meta.size).sum();
    let mut free = free_bytes;
    while let Some(oldest) = rows.last() {
        let reason = if rules.max_bytes.is_some_and(|cap| total > cap) {
            Reason::StorageCap
        } else if free.is_some_and(|f| f < rules.min_free_bytes) {
            Reason::MinFree
        } else {
            break;
        };
        total -= oldest.meta.size;
        free = free.map(|f| f + oldest.meta.size);
        out.push((oldest.clone(), reason));
        rows.pop();
    }
    out
}

pub fn rules(h: &Hosting) -> Rules {
    rules_from(&h.cfg)
}

pub fn rules_from(cfg: &Config) -> Rules {
    Rules {
        max_age: cfg.max_age,
        per_user_limit: cfg.per_user_limit,
        max_bytes: cfg.storage_max_bytes,
        min_free_bytes: cfg.min_free_bytes,
    }
}

/// What a cleanup of a disk store would delete, read without opening the
/// store for writing: no journal compaction, no sidecar repair, no sweep.
/// So `cleanup --dry-run` changes nothing, even beside a running proxy.
pub fn plan_disk_read_only(cfg: &Config) -> std::io::Result<Vec<Deletion>> {
    let root = &cfg.storage_path;
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let metas = crate::store::disk::list_read_only(root)?;
    let index = crate::index::Index::build(&root.join("~state"), metas);
    let free = if cfg.min_free_bytes > 0 {
        crate::store::disk::DiskStore::new(root)?.free_bytes()
    } else {
        None
    };
    Ok(plan(index.rows(), now_ms(), &rules_from(cfg), free)
        .into_iter()
        .map(|(row, reason)| Deletion {
            user_id: row.key.user.to_string(),
            id: row.key.id.to_string(),
            size_bytes: row.meta.size,
            reason,
        })
        .collect())
}

static CLEANUP_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the rules once. Only one cleanup runs at a time; a second caller
/// waits for the first and then runs its own pass.
pub async fn cleanup(h: &Arc<Hosting>, dry_run: bool) -> Vec<Deletion> {
    let _guard = CLEANUP_LOCK.lock().await;
    if h.cfg.storage_backend == crate::config::StorageBackend::S3 {
        // Replicas share one bucket: decide on what all of them stored and
        // the newest access times any of them saw.
        if let Err(e) = h.refresh_from_store().await {
            tracing::warn!(error = %e, "cleanup skipped: the store cannot be listed");
            return Vec::new();
        }
        h.merge_shared_access().await;
    }
    let free = if h.cfg.min_free_bytes > 0 {
        h.store.free_bytes()
    } else {
        None
    };
    let decisions = plan(h.index.rows(), now_ms(), &rules(h), free);
    let mut done = Vec::new();
    for (row, reason) in decisions {
        if !dry_run {
            if let Err(e) = h.delete(&row.key).await {
                tracing::error!(image = %row.key, error = %e, "cleanup could not delete");
                continue;
            }
            metrics::get()
                .cleanup_deleted
                .with_label_values(&[reason.as_str()])
                .inc();
            tracing::info!(image = %row.key, reason = reason.as_str(), "deleted by cleanup");
        }
        done.push(Deletion {
            user_id: row.key.user.to_string(),
            id: row.key.id.to_string(),
            size_bytes: row.meta.size,
            reason,
        });
    }
    done
}

/// Applied as each new image is stored, so a user never holds more than the
/// limit for longer than one store. The image just stored is kept.
pub async fn enforce_user_limit(h: &Hosting, user: &UserId, just_stored: &ImageKey) {
    let limit = h.cfg.per_user_limit;
    if limit == 0 {
        return;
    }
    // Two stores for one user checking at once would each trim to the
    // limit around their own new image, and together delete too much.
    static ENFORCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _serial = ENFORCE.lock().await;
    let mut rows = h.index.user_rows(user);
    if rows.len() <= limit {
        return;
    }
    rows.sort_by(|a, b| {
        (b.key == *just_stored)
            .cmp(&(a.key == *just_stored))
            .then(b.accessed_ms.cmp(&a.accessed_ms))
            .then_with(|| a.key.cmp(&b.key))
    });
    for row in rows.into_iter().skip(limit) {
        match h.delete(&row.key).await {
            Ok(_) => {
                metrics::get()
                    .cleanup_deleted
                    .with_label_values(&["user_limit"])
                    .inc();
                tracing::info!(image = %row.key, "deleted: over the per-user limit");
            }
            Err(e) => {
                tracing::error!(image = %row.key, error = %e, "per-user limit: delete failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ImageId;
    use crate::image_format::Format;
    use crate::store::ImageMeta;

    fn row(user: &str, n: u32, size: u64, accessed: u64) -> Row {
        let id = ImageId::for_source(&n.to_string());
        Row {
            key: ImageKey::new(UserId::parse(user).unwrap(), id.clone()),
            meta: Arc::new(ImageMeta {
                id: id.to_string(),
                user_id: user.into(),
                format: Format::Png,
                content_type: "image/png".into(),
                size,
                sha256: "00".repeat(32),
                source_url: None,
                prediction_id: None,
                created_at: 0,
            }),
            accessed_ms: accessed,
        }
    }

    fn rules() -> Rules {
        Rules {
            max_age: Duration::from_secs(100),
            per_user_limit: 2,
            max_bytes: None,
            min_free_bytes: 0,
        }
    }

    #[test]
    fn retention_by_last_request() {
        let rows = vec![row("a", 1, 10, 1_000), row("a", 2, 10, 150_000)];
        let out = plan(rows, 200_000, &rules(), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::Expired);
        assert_eq!(out[0].0.accessed_ms, 1_000);
    }

    #[test]
    fn user_limit_evicts_least_recently_requested() {
        // Image 1 is the oldest stored but the most recently requested.
        let rows = vec![
            row("a", 1, 10, 190_000),
            row("a", 2, 10, 150_000),
            row("a", 3, 10, 160_000),
            row("b", 4, 10, 100_500),
        ];
        let out = plan(rows, 200_000, &rules(), None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::UserLimit);
        assert_eq!(out[0].0.key.id, ImageId::for_source("2"));
    }

    #[test]
    fn storage_cap_and_min_free() {
        let mut r = rules();
        r.per_user_limit = 0;
        r.max_bytes = Some(25);
        let rows = vec![
            row("a", 1, 10, 199_000),
            row("b", 2, 10, 198_000),
            row("c", 3, 10, 197_000),
        ];
        let out = plan(rows.clone(), 200_000, &r, None);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, Reason::StorageCap);
        assert_eq!(out[0].0.key.id, ImageId::for_source("3"));

        r.max_bytes = None;
        r.min_free_bytes = 100;
        let out = plan(rows, 200_000, &r, Some(85));
        assert_eq!(
            out.iter().map(|d| d.1).collect::<Vec<_>>(),
            vec![Reason::MinFree, Reason::MinFree]
        );
    }
}
