//! `permaproxy migrate --to s3`: copies every image and its metadata from
//! the disk store to the configured bucket. It resumes (objects already
//! there with the right digest are skipped), verifies each copy by reading
//! it back and hashing it, and never touches the source.

use sha2::{Digest, Sha256};

use futures::StreamExt;

use crate::config::Config;
use crate::store::object::ObjectBackend;
use crate::store::{ImageMeta, Store};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub copied: usize,
    pub skipped: usize,
    pub failed: usize,
}

pub async fn to_s3(cfg: &Config, dry_run: bool) -> Result<Summary, String> {
    let s3cfg = cfg
        .storage
        .s3
        .as_ref()
        .ok_or("S3_BUCKET: set it (and S3_ENDPOINT, S3_REGION, credentials) to migrate")?;
    let target = ObjectBackend::s3(s3cfg)?;
    // Read-only: the volume may belong to a proxy that is still running, so
    // no sidecar repair and no sweep of its temp files (a write in progress).
    let images = crate::store::disk::list_read_only(&cfg.storage.path)
        .map_err(|e| format!("cannot list {}: {e}", cfg.storage.path.display()))?;
    let total = images.len();
    let mut summary = Summary::default();
    for (n, meta) in images.iter().enumerate() {
        let name = meta.relative_path();
        let progress = format!("[{}/{total}] {name}", n + 1);
        match target.stat(meta).await {
            Ok(Some(existing)) if existing.sha256 == meta.sha256 => {
                println!("{progress}: already there, skipped");
                summary.skipped += 1;
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("the bucket is unreachable: {e}")),
        }
        if dry_run {
            println!("{progress}: would copy {} bytes", meta.size);
            summary.copied += 1;
            continue;
        }
        match copy_one(&cfg.storage.path, &target, meta).await {
            Ok(()) => {
                println!("{progress}: copied and verified ({} bytes)", meta.size);
                summary.copied += 1;
            }
            Err(e) => {
                eprintln!("{progress}: FAILED: {e}");
                summary.failed += 1;
            }
        }
    }
    println!(
        "{} {} image(s), skipped {} already present, {} failed; the disk store was left in place",
        if dry_run { "would copy" } else { "copied" },
        summary.copied,
        summary.skipped,
        summary.failed
    );
    Ok(summary)
}

async fn copy_one(
    root: &std::path::Path,
    target: &ObjectBackend,
    meta: &ImageMeta,
) -> Result<(), String> {
    let path = root.join(meta.relative_path());
    target.put(&path, meta).await.map_err(|e| e.to_string())?;
    let mut stream = target.read(meta, None).await.map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let digest = hex::encode(hasher.finalize());
    if digest != meta.sha256 || size != meta.size {
        return Err(format!(
            "verification failed: got {size} bytes with sha256 {digest}"
        ));
    }
    Ok(())
}
