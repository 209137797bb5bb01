//! Images on a local volume: `{root}/{userId}/{imageId}.{ext}` with a JSON
//! sidecar `{imageId}.json` beside it. Internal folders start with `~`, which
//! no user id may contain, so they can never collide with a user's folder.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ByteRange, ByteStream, ImageMeta, MetaRecord, Store, StoreError};
use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::{self, Format};

/// Read size when streaming from disk: large enough that a 2 MB image is a
/// handful of reads, small enough that 100 concurrent readers stay cheap (one
/// chunk per reader is alive at a time). 256 KiB served a 2 MB image with
/// about 15% less CPU, but took 100 clients of a 10 MB image over the 64 MB
/// RSS budget with the cache off (BENCHMARKS.md).
const READ_CHUNK: usize = 128 * 1024;

pub struct DiskStore {
    root: PathBuf,
    /// Never writes: `cleanup --dry-run` and `migrate` beside a running
    /// proxy read the folder as it is, repairing nothing.
    read_only: bool,
}

impl DiskStore {
    pub fn new(root: &Path) -> std::io::Result<DiskStore> {
        std::fs::create_dir_all(root)?;
        Ok(DiskStore {
            root: root.to_path_buf(),
            read_only: false,
        })
    }

    pub fn read_only(root: &Path) -> DiskStore {
        DiskStore {
            root: root.to_path_buf(),
            read_only: true,
        }
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Backend(
                "this store was opened read-only".into(),
            ));
        }
        Ok(())
    }

    fn image_path(&self, meta: &ImageMeta) -> PathBuf {
        self.root.join(meta.relative_path())
    }

    fn sidecar_path(&self, key: &ImageKey) -> PathBuf {
        self.root
            .join(key.user.as_str())
            .join(format!("{}.json", key.id))
    }

    /// What `relative` names under the root, or `None` for anything that is
    /// not exactly `{user}/{id}.{ext}` or a variant's
    /// `{user}/{id}.v/{name}.{ext}` (the queue of deletions is data, so it
    /// is checked like a request path before it names a file).
    fn parse_relative(&self, relative: &str) -> Option<Target> {
        let (user, rest) = relative.split_once('/')?;
        let user = UserId::parse(user)?;
        if let Some((dir, file)) = rest.split_once('/') {
            let id = ImageId::parse(dir.strip_suffix(".v")?)?;
            let (name, ext) = file.rsplit_once('.')?;
            if !super::is_variant_name(name) {
                return None;
            }
            Format::from_ext(ext)?;
            let key = ImageKey::new(user, id);
            return Some(Target::Variant {
                file: self
                    .root
                    .join(super::variant_path(&key, name, Format::from_ext(ext)?)),
                dir: self.root.join(super::variant_dir(&key)),
            });
        }
        let (id, ext) = rest.rsplit_once('.')?;
        let key = ImageKey::new(user, ImageId::parse(id)?);
        Format::from_ext(ext)?;
        Some(Target::Image {
            image: self.root.join(relative),
            sidecar: self.sidecar_path(&key),
            variants: self.root.join(super::variant_dir(&key)),
        })
    }

    /// A variant: no sidecar (the database row is its metadata, and a lost
    /// database simply means variants are made again), in the image's
    /// variant folder.
    async fn put_variant(&self, staged: &Path, meta: &ImageMeta) -> Result<(), StoreError> {
        let dir = self.root.join(super::variant_dir(&meta.key));
        let user_dir = self.root.join(meta.key.user.as_str());
        let target = self.image_path(meta);
        let staged = staged.to_path_buf();
        blocking(move || {
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(StoreError::from_io)?;
                sync_dir(&user_dir).map_err(StoreError::from_io)?;
            }
            std::fs::rename(&staged, &target).map_err(StoreError::from_io)?;
            sync_dir(&dir).map_err(StoreError::from_io)
        })
        .await
    }
}

/// A path from the queue of deletions, checked.
enum Target {
    Image {
        image: PathBuf,
        sidecar: PathBuf,
        /// The image's variant folder: removed with it, so variants a
        /// lost database no longer lists do not outlive their image here.
        variants: PathBuf,
    },
    Variant {
        file: PathBuf,
        dir: PathBuf,
    },
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::from_io(e)),
    }
}

fn read_sidecar(path: &Path) -> Option<ImageMeta> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<MetaRecord>(&bytes)
        .ok()?
        .into_meta()
}

/// Write to a temporary name, fsync, rename: a reader sees the old file or
/// the whole new one, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("blocking task failed: {e}")))?
}

/// Reads exactly `len` bytes straight into a buffer: one copy from the page
/// cache, no second one through an intermediate file buffer, and one `read`
/// call (`read_to_end` without a size hint starts at 8 KiB and doubles: five
/// calls per 128 KiB chunk). `reuse` is the previous chunk of the same image:
/// the socket write has let go of it by the time the next chunk is asked for,
/// so a long image costs one allocation and one zeroing, not one per chunk.
fn read_chunk(
    file: &mut std::fs::File,
    len: usize,
    reuse: Option<Bytes>,
) -> std::io::Result<Bytes> {
    let mut buf = match reuse.map(Bytes::try_into_mut) {
        Some(Ok(mut b)) if b.len() >= len => {
            b.truncate(len);
            b
        }
        _ => BytesMut::zeroed(len),
    };
    file.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(e.kind(), "image file is shorter than its metadata")
        } else {
            e
        }
    })?;
    Ok(buf.freeze())
}

#[async_trait]
impl Store for DiskStore {
    async fn put(&self, staged: &Path, meta: &ImageMeta) -> Result<(), StoreError> {
        self.writable()?;
        if meta.variant.is_some() {
            return self.put_variant(staged, meta).await;
        }
        let key = &meta.key;
        let user_dir = self.root.join(key.user.as_str());
        let sidecar = self.sidecar_path(key);
        let target = self.image_path(meta);
        let staged = staged.to_path_buf();
        let root = self.root.clone();
        let json = serde_json::to_vec_pretty(&MetaRecord::from_meta(meta))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        blocking(move || {
            if !user_dir.exists() {
                std::fs::create_dir_all(&user_dir).map_err(StoreError::from_io)?;
                sync_dir(&root).map_err(StoreError::from_io)?;
            }
            // Sidecar first: an image without a sidecar is repaired at start,
            // but a sidecar never points at a missing image for long.
            write_atomic(&sidecar, &json).map_err(StoreError::from_io)?;
            std::fs::rename(&staged, &target).map_err(StoreError::from_io)?;
            sync_dir(&user_dir).map_err(StoreError::from_io)
        })
        .await
    }

    async fn stat(&self, meta: &ImageMeta) -> Result<Option<ImageMeta>, StoreError> {
        let image = self.image_path(meta);
        let sidecar = self.sidecar_path(&meta.key);
        blocking(move || {
            if !image.exists() {
                return Ok(None);
            }
            Ok(read_sidecar(&sidecar))
        })
        .await
    }

    async fn read(
        &self,
        meta: &ImageMeta,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StoreError> {
        let path = self.image_path(meta);
        let (start, len) = range.map_or((0, meta.size), |r| (r.start, r.len()));
        // Reads run on the worker thread, not in the blocking pool: images are
        // served from the page cache almost always, and a hop to the pool per
        // chunk (two context switches) cost more than the read itself: 200 KB
        // from disk took 99 us of CPU per request inline against 168 us with
        // spawn_blocking (BENCHMARKS.md). A cold read stalls this worker for
        // one chunk, as sendfile stalls an nginx worker.
        let mut file = std::fs::File::open(&path).map_err(StoreError::from_io)?;
        // Short or long, the file is not the image its row describes.
        super::check_size(meta, file.metadata().map_err(StoreError::from_io)?.len())?;
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .map_err(StoreError::from_io)?;
        }
        // The first chunk is read now, so a missing or short file still fails
        // before any header is written.
        let first_len = len.min(READ_CHUNK as u64) as usize;
        let first = read_chunk(&mut file, first_len, None).map_err(StoreError::from_io)?;
        let rest = futures::stream::try_unfold(
            (file, len - first_len as u64, first.clone()),
            |(mut file, left, previous)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let n = left.min(READ_CHUNK as u64) as usize;
                let chunk = read_chunk(&mut file, n, Some(previous))?;
                Ok(Some((chunk.clone(), (file, left - n as u64, chunk))))
            },
        );
        Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(rest)))
    }

    /// Opened on the worker thread, as [`Store::read`] does: from the page
    /// cache this is cheaper than a hop to the blocking pool.
    fn open_file(&self, meta: &ImageMeta) -> Result<Option<std::fs::File>, StoreError> {
        let file = std::fs::File::open(self.image_path(meta)).map_err(StoreError::from_io)?;
        // Checked before any header goes out: a short file would otherwise
        // end the body early.
        super::check_size(meta, file.metadata().map_err(StoreError::from_io)?.len())?;
        Ok(Some(file))
    }

    async fn read_all(&self, meta: &ImageMeta) -> Result<Bytes, StoreError> {
        let data = tokio::fs::read(self.image_path(meta))
            .await
            .map_err(StoreError::from_io)?;
        super::check_size(meta, data.len() as u64)?;
        Ok(Bytes::from(data))
    }

    async fn delete(&self, relative_path: &str) -> Result<(), StoreError> {
        self.writable()?;
        let target = self
            .parse_relative(relative_path)
            .ok_or_else(|| StoreError::Backend(format!("not an image path: {relative_path:?}")))?;
        blocking(move || match target {
            Target::Image {
                image,
                sidecar,
                variants,
            } => {
                // Image first: once it is gone nothing can serve it, and an
                // orphan sidecar is only read by reindex, which checks the image.
                remove_file(&image)?;
                remove_file(&sidecar)?;
                match std::fs::remove_dir_all(&variants) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(StoreError::from_io(e)),
                }
            }
            Target::Variant { file, dir } => {
                remove_file(&file)?;
                // The last variant out removes the folder; one still in use
                // (not empty) stays, which is what remove_dir checks.
                let _ = std::fs::remove_dir(&dir);
                Ok(())
            }
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ImageMeta>, StoreError> {
        let root = self.root.clone();
        let fix = !self.read_only;
        blocking(move || match scan_root(&root, fix) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other.map_err(StoreError::from_io),
        })
        .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.writable()?;
        let path = self.root.join("~probe");
        blocking(move || {
            write_atomic(&path, b"ok").map_err(StoreError::from_io)?;
            std::fs::remove_file(&path).map_err(StoreError::from_io)
        })
        .await
    }

    fn free_bytes(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root).ok()?;
        Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
    }

    fn volume_bytes(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root).ok()?;
        Some(stat.blocks() as u64 * stat.fragment_size() as u64)
    }

    fn name(&self) -> &'static str {
        "disk"
    }
}

/// Every image under `root` as [`Store::list`] would find it, but changing
/// nothing on disk (for `cleanup --dry-run`, which may run beside a live proxy).
pub fn list_read_only(root: &Path) -> std::io::Result<Vec<ImageMeta>> {
    scan_root(root, false)
}

/// Walks `{root}/{user}/` and returns every image. With `fix`, sidecars that
/// are missing or corrupt are rebuilt from the image bytes and orphans removed.
fn scan_root(root: &Path, fix: bool) -> std::io::Result<Vec<ImageMeta>> {
    let mut out = Vec::new();
    for user_entry in std::fs::read_dir(root)? {
        let user_entry = user_entry?;
        let name = user_entry.file_name();
        let Some(user) = name.to_str().and_then(UserId::parse) else {
            continue;
        };
        if !user_entry.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(user_entry.path())? {
            let file = file?;
            let fname = file.file_name();
            let fname = fname.to_string_lossy();
            // `{id}.v/` holds the image's variants: derived bytes, listed
            // in the database only, never imported as images.
            if file.file_type()?.is_dir() {
                continue;
            }
            if fname.starts_with(".tmp-") {
                if fix {
                    let _ = std::fs::remove_file(file.path());
                }
                continue;
            }
            let Some((stem, ext)) = fname.rsplit_once('.') else {
                continue;
            };
            let Some(id) = ImageId::parse(stem) else {
                continue;
            };
            let key = ImageKey::new(user.clone(), id);
            if ext == "json" {
                let has_image = Format::ALL.iter().any(|f| {
                    user_entry
                        .path()
                        .join(format!("{stem}.{}", f.ext()))
                        .exists()
                });
                if !has_image && fix {
                    let _ = std::fs::remove_file(file.path());
                }
                continue;
            }
            if Format::from_ext(ext).is_none() {
                continue;
            }
            let sidecar = user_entry.path().join(format!("{stem}.json"));
            // A sidecar that disagrees with the image's path or length is
            // corrupt: the image is the truth.
            let len = file.metadata().ok().map(|m| m.len());
            let meta = read_sidecar(&sidecar)
                .filter(|m| m.relative_path() == format!("{user}/{fname}") && Some(m.size) == len);
            match meta.or_else(|| repair(root, &key, fix)) {
                Some(m) => out.push(m),
                None => tracing::warn!(path = %file.path().display(), "not an image, ignored"),
            }
        }
    }
    Ok(out)
}

/// Rebuilds metadata from the image itself: the bytes are the truth. With
/// `fix`, the sidecar is rewritten and a misnamed file renamed.
fn repair(root: &Path, key: &ImageKey, fix: bool) -> Option<ImageMeta> {
    let dir = root.join(key.user.as_str());
    let (path, _) = Format::ALL.iter().find_map(|f| {
        let p = dir.join(format!("{}.{}", key.id, f.ext()));
        p.exists().then_some((p, *f))
    })?;
    let mut file = std::fs::File::open(&path).ok()?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64)]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let format = image_format::sniff(&head)?;
    let created_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let meta = ImageMeta {
        key: key.clone(),
        format,
        size,
        sha256: hex::encode(hasher.finalize()),
        source_url: None,
        prediction_id: None,
        created_at,
        private: false,
        variant: None,
        vary_accept: false,
    };
    if !fix {
        return Some(meta);
    }
    // A file whose extension lies is renamed so the path matches the bytes.
    let right = root.join(meta.relative_path());
    if right != path && std::fs::rename(&path, &right).is_err() {
        return None;
    }
    if let Ok(json) = serde_json::to_vec_pretty(&MetaRecord::from_meta(&meta)) {
        let _ = write_atomic(&dir.join(format!("{}.json", key.id)), &json);
    }
    tracing::info!(image = %key, "rebuilt metadata from the image bytes");
    Some(meta)
}

#[cfg(test)]
mod tests;
