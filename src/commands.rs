//! The one-shot commands: `cleanup`, `reindex` and `migrate`. They work on
//! the database and the store directly, never through a running engine, so
//! they can run beside a live proxy: no staging sweep, no takeover.

use std::sync::Arc;

use crate::config::{Config, StorageBackend};
use crate::hosting::{self, cleanup_plan, run_cleanup};
use crate::repo::{Repo, SqlRepo};
use crate::store::disk::DiskStore;
use crate::store::Store;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    crate::server::engine_runtime()
}

/// The store as a dry run may see it: on disk, read-only.
fn read_only_store(cfg: &Config) -> Result<Arc<dyn Store>, String> {
    match cfg.storage.backend {
        StorageBackend::Disk => Ok(Arc::new(DiskStore::read_only(&cfg.storage.path))),
        StorageBackend::S3 => hosting::open_store(cfg),
    }
}

/// The SQLite file named by an `sqlite://` URL.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// The database for a dry run. A store not yet upgraded has no database
/// file: it is imported into memory, so the dry run creates nothing.
async fn dry_run_repo(cfg: &Config, store: &dyn Store) -> Result<Arc<dyn Repo>, String> {
    match sqlite_file(&cfg.database.url) {
        Some(file) if !file.exists() => {
            let repo = SqlRepo::connect("sqlite::memory:", 1)
                .await
                .map_err(|e| e.to_string())?;
            hosting::import_legacy(cfg, &repo, store)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(repo))
        }
        _ => hosting::open_repo(cfg).await,
    }
}

pub fn cleanup(cfg: Config, dry_run: bool) -> Result<(), String> {
    runtime()?.block_on(async {
        let deleted = if dry_run {
            let store = read_only_store(&cfg)?;
            let repo = dry_run_repo(&cfg, store.as_ref()).await?;
            cleanup_plan(&cfg, repo.as_ref(), store.as_ref())
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(r, why)| (r.key.to_string(), r.size, why))
                .collect::<Vec<_>>()
        } else {
            let store = hosting::open_store(&cfg)?;
            let repo = hosting::open_repo(&cfg).await?;
            let (report, _) = run_cleanup(&cfg, repo.as_ref(), store.as_ref(), false)
                .await
                .map_err(|e| e.to_string())?;
            report
                .deleted
                .into_iter()
                .map(|d| (format!("{}/{}", d.user_id, d.id), d.size_bytes, d.reason))
                .collect()
        };
        let verb = if dry_run { "would delete" } else { "deleted" };
        for (key, size, reason) in &deleted {
            println!("{verb} {key} ({size} bytes): {}", reason.as_str());
        }
        println!("{verb} {} image(s)", deleted.len());
        Ok(())
    })
}

pub fn reindex(cfg: Config) -> Result<(), String> {
    runtime()?.block_on(async {
        let store = hosting::open_store(&cfg)?;
        let repo = hosting::open_repo(&cfg).await?;
        let report = hosting::reindex(repo.as_ref(), store.as_ref()).await?;
        println!(
            "reindexed {} image(s) from the {} store into the {} database; removed {} row(s) whose bytes are gone",
            report.found,
            store.name(),
            repo.dialect().name(),
            report.missing_rows_removed
        );
        Ok(())
    })
}

pub fn migrate(cfg: Config, to: &str, dry_run: bool) -> Result<(), String> {
    if to != "s3" {
        return Err(format!("--to {to:?}: only s3 is supported"));
    }
    let summary = runtime()?.block_on(crate::migrate::to_s3(&cfg, dry_run))?;
    if summary.failed > 0 {
        return Err(format!(
            "{} image(s) failed to copy; run it again to resume",
            summary.failed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlite_files_from_urls() {
        assert_eq!(
            super::sqlite_file("sqlite:///data/images/permaproxy.db?mode=rwc"),
            Some("/data/images/permaproxy.db".into())
        );
        assert_eq!(
            super::sqlite_file("sqlite://./data/x.db"),
            Some("./data/x.db".into())
        );
        assert_eq!(super::sqlite_file("sqlite::memory:"), None);
        assert_eq!(super::sqlite_file("postgres://h/db"), None);
    }
}
