//! Images in an object store through the `object_store` crate: an
//! S3-compatible bucket (S3, R2, Garage, MinIO) in production, memory in
//! in-process tests. Objects are keyed `{prefix}{userId}/{imageId}.{ext}` and
//! carry their metadata as `x-amz-meta-*`, so `reindex` can rebuild the
//! database from the bucket alone. Probes (and, in older versions, shared
//! access times) live under `{prefix}~state/`, which no user id can collide
//! with.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange,
    MultipartUpload, ObjectStore, PutOptions, PutPayload, RetryConfig,
};
use tokio::io::AsyncReadExt;

use super::{ByteRange, ByteStream, ImageMeta, Store, StoreError};
use crate::config::S3Config;
use crate::ids::{ImageId, ImageKey, UserId};
use crate::image_format::Format;

/// Above this size uploads go in parts, so no upload holds a whole large
/// image in memory.
const MULTIPART_THRESHOLD: u64 = 8 << 20;
const PART_SIZE: usize = 8 << 20;
/// HEADs in flight while a reindex reads a listing.
const LIST_CONCURRENCY: usize = 16;

pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    name: &'static str,
}

impl ObjectBackend {
    /// Everything in memory: the engine's in-process tests.
    pub fn memory() -> ObjectBackend {
        ObjectBackend {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: "images/".into(),
            name: "memory",
        }
    }

    pub fn s3(cfg: &S3Config) -> Result<ObjectBackend, String> {
        let (endpoint, virtual_hosted) = match &cfg.endpoint {
            Some(e) => {
                let (e, v) = addressing(e, &cfg.bucket, cfg.force_path_style);
                (Some(e), v)
            }
            None => (None, !cfg.force_path_style),
        };
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(virtual_hosted)
            // An outage must surface in seconds, not after minutes of
            // retries: callers fall back (original URLs, memory cache).
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(60)),
            );
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t);
        }
        let store: AmazonS3 = b.build().map_err(|e| format!("S3 settings: {e}"))?;
        Ok(ObjectBackend {
            store: Arc::new(store),
            prefix: cfg.prefix.clone(),
            name: "s3",
        })
    }

    /// The key as written: `Path::from` would percent-encode `~` (the state
    /// folder would land under `%7Estate/` and escape the listing filter).
    /// User ids, image ids and extensions are already safe segments.
    fn object(&self, relative: &str) -> ObjectPath {
        let key = format!("{}{relative}", self.prefix);
        ObjectPath::parse(&key).unwrap_or_else(|_| ObjectPath::from(key))
    }

    fn state_path(&self, name: &str) -> ObjectPath {
        self.object(&format!("~state/{name}"))
    }

    async fn upload(
        &self,
        staged: &Path,
        meta: &ImageMeta,
        path: &ObjectPath,
    ) -> Result<(), StoreError> {
        let attrs = attributes(meta);
        let mut file = tokio::fs::File::open(staged)
            .await
            .map_err(StoreError::from_io)?;
        if meta.size <= MULTIPART_THRESHOLD {
            let mut data = Vec::with_capacity(meta.size as usize);
            file.read_to_end(&mut data)
                .await
                .map_err(StoreError::from_io)?;
            let opts = PutOptions {
                attributes: attrs,
                ..Default::default()
            };
            self.store
                .put_opts(path, PutPayload::from(data), opts)
                .await
                .map_err(backend)?;
            return Ok(());
        }
        let opts = object_store::PutMultipartOptions {
            attributes: attrs,
            ..Default::default()
        };
        let mut upload = self
            .store
            .put_multipart_opts(path, opts)
            .await
            .map_err(backend)?;
        // Any failure aborts the upload: parts of an upload that is neither
        // completed nor aborted stay in the bucket, invisible and billed.
        let sent = match send_parts(upload.as_mut(), &mut file, meta.size).await {
            Ok(()) => upload.complete().await.map(|_| ()).map_err(backend),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(object = %path, error = %abort, "could not abort a failed multipart upload");
            }
            return Err(e);
        }
        Ok(())
    }

    /// The image's metadata from the object's attributes.
    async fn meta_at(&self, path: &ObjectPath) -> Result<Option<ImageMeta>, StoreError> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(path, opts).await {
            Ok(r) => Ok(meta_from_attributes(&r.attributes, r.meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }
}

/// Reads the staged file in parts and uploads them, at most two in flight.
/// Driven by hand rather than through `WriteMultipart`, whose `finish`
/// drops the upload without aborting it when a part fails.
async fn send_parts(
    upload: &mut dyn MultipartUpload,
    file: &mut tokio::fs::File,
    size: u64,
) -> Result<(), StoreError> {
    let mut inflight: futures::stream::FuturesUnordered<object_store::UploadPart> =
        futures::stream::FuturesUnordered::new();
    let mut sent = 0u64;
    loop {
        let mut part = Vec::with_capacity(PART_SIZE);
        let n = (&mut *file)
            .take(PART_SIZE as u64)
            .read_to_end(&mut part)
            .await
            .map_err(StoreError::from_io)?;
        if n == 0 {
            break;
        }
        sent += n as u64;
        while inflight.len() >= 2 {
            if let Some(r) = inflight.next().await {
                r.map_err(backend)?;
            }
        }
        inflight.push(upload.put_part(PutPayload::from(part)));
    }
    while let Some(r) = inflight.next().await {
        r.map_err(backend)?;
    }
    if sent != size {
        return Err(StoreError::Backend(format!(
            "staged file holds {sent} bytes, metadata says {size}"
        )));
    }
    Ok(())
}

/// The endpoint as object_store wants it, and whether requests are
/// virtual-hosted. object_store appends the bucket to the endpoint only in
/// path style; in virtual-hosted style it takes the endpoint as the bucket's
/// own, so the bucket goes into the host here (`https://{bucket}.{host}`),
/// as S3_FORCE_PATH_STYLE=false promises. An IP address cannot carry a
/// bucket name, so such endpoints always use path style.
fn addressing(endpoint: &str, bucket: &str, path_style: bool) -> (String, bool) {
    let trimmed = endpoint.trim_end_matches('/').to_string();
    if path_style {
        return (trimmed, false);
    }
    let Ok(mut url) = url::Url::parse(endpoint) else {
        return (trimmed, true);
    };
    match url.host() {
        Some(url::Host::Domain(host)) => {
            if !host.starts_with(&format!("{bucket}.")) {
                let named = format!("{bucket}.{host}");
                if url.set_host(Some(&named)).is_err() {
                    return (trimmed, false);
                }
            }
            (url.as_str().trim_end_matches('/').to_string(), true)
        }
        _ => (trimmed, false),
    }
}

fn backend(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Backend(other.to_string()),
    }
}

fn attributes(meta: &ImageMeta) -> Attributes {
    let mut a = Attributes::new();
    a.insert(
        Attribute::ContentType,
        AttributeValue::from(meta.content_type()),
    );
    a.insert(
        Attribute::CacheControl,
        AttributeValue::from(crate::serve::CACHE_CONTROL),
    );
    let mut put = |k: &'static str, v: String| {
        a.insert(Attribute::Metadata(k.into()), AttributeValue::from(v));
    };
    if let Some(name) = &meta.variant {
        // A variant (issue 14): marked, so `reindex` never takes it for an
        // image of its own.
        put("permaproxy-variant", name.to_string());
    }
    put("permaproxy-id", meta.key.id.to_string());
    put("permaproxy-user", meta.key.user.to_string());
    put("permaproxy-format", meta.format.ext().to_string());
    put("permaproxy-sha256", meta.sha256.clone());
    put("permaproxy-created", meta.created_at.to_string());
    if let Some(s) = &meta.source_url {
        // Header values must be plain ASCII.
        put(
            "permaproxy-source",
            percent_encoding::utf8_percent_encode(s, percent_encoding::CONTROLS).to_string(),
        );
    }
    if let Some(p) = &meta.prediction_id {
        put(
            "permaproxy-prediction",
            percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    a
}

fn meta_from_attributes(a: &Attributes, size: u64) -> Option<ImageMeta> {
    let get = |k: &'static str| a.get(&Attribute::Metadata(k.into())).map(|v| v.to_string());
    let decode = |v: String| {
        percent_encoding::percent_decode_str(&v)
            .decode_utf8_lossy()
            .to_string()
    };
    if get("permaproxy-variant").is_some() {
        return None;
    }
    let format = Format::from_ext(&get("permaproxy-format")?)?;
    let key = ImageKey::new(
        UserId::parse(&get("permaproxy-user")?)?,
        ImageId::parse(&get("permaproxy-id")?)?,
    );
    Some(ImageMeta {
        key,
        format,
        size,
        sha256: get("permaproxy-sha256")?,
        source_url: get("permaproxy-source").map(decode),
        prediction_id: get("permaproxy-prediction").map(decode),
        created_at: get("permaproxy-created")?.parse().ok()?,
        private: false,
        variant: None,
        vary_accept: false,
    })
}

#[async_trait]
impl Store for ObjectBackend {
    async fn put(&self, staged: &Path, meta: &ImageMeta) -> Result<(), StoreError> {
        let path = self.object(&meta.relative_path());
        match self.upload(staged, meta, &path).await {
            Ok(()) => Ok(()),
            // Two replicas writing the same source race on one key; the
            // loser's multipart upload can be answered NoSuchUpload. Same
            // key means same bytes, so the winner's object is as good.
            Err(e) => match self.meta_at(&path).await {
                Ok(Some(existing)) if existing.sha256 == meta.sha256 => Ok(()),
                _ => Err(e),
            },
        }
    }

    async fn stat(&self, meta: &ImageMeta) -> Result<Option<ImageMeta>, StoreError> {
        self.meta_at(&self.object(&meta.relative_path())).await
    }
    async fn read(
        &self,
        meta: &ImageMeta,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StoreError> {
        let opts = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)),
            ..Default::default()
        };
        let result = self
            .store
            .get_opts(&self.object(&meta.relative_path()), opts)
            .await
            .map_err(backend)?;
        // The object's whole length, even for a ranged read: a short one
        // would end the body early, a long one would not be this image.
        super::check_size(meta, result.meta.size)?;
        Ok(Box::pin(
            result.into_stream().map_err(std::io::Error::other),
        ))
    }

    async fn read_all(&self, meta: &ImageMeta) -> Result<Bytes, StoreError> {
        let r = self
            .store
            .get(&self.object(&meta.relative_path()))
            .await
            .map_err(backend)?;
        super::check_size(meta, r.meta.size)?;
        let bytes = r.bytes().await.map_err(backend)?;
        // Checked again: the object can change between the answer's
        // header and its end.
        super::check_size(meta, bytes.len() as u64)?;
        Ok(bytes)
    }

    async fn delete(&self, relative_path: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.object(relative_path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(&self) -> Result<Vec<ImageMeta>, StoreError> {
        let root = (!self.prefix.is_empty()).then(|| self.object(""));
        let objects: Vec<_> = self
            .store
            .list(root.as_ref())
            .try_filter(|o| {
                let name = o.location.as_ref();
                let rel = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
                // Variants live under `{user}/{id}.v/`: skipped without the
                // HEAD that would read their marker.
                let variant = rel.split('/').nth(1).is_some_and(|d| d.ends_with(".v"));
                futures::future::ready(!rel.starts_with('~') && !variant)
            })
            .try_collect()
            .await
            .map_err(backend)?;
        let metas: Vec<Option<ImageMeta>> = futures::stream::iter(objects)
            .map(|o| async move { self.meta_at(&o.location).await })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(metas.into_iter().flatten().collect())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let path = self.state_path(&format!("probe-{:016x}", rand::random::<u64>()));
        self.store
            .put(&path, PutPayload::from_static(b"ok"))
            .await
            .map_err(backend)?;
        self.store.delete(&path).await.map_err(backend)
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }

    fn name(&self) -> &'static str {
        self.name
    }

    async fn legacy_state(&self, dir: &str) -> Result<Vec<Bytes>, StoreError> {
        let prefix = self.state_path(dir);
        let names: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(backend)?;
        let mut out = Vec::new();
        for o in names {
            if let Ok(r) = self.store.get(&o.location).await {
                if let Ok(b) = r.bytes().await {
                    out.push(b);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
