//! Issue 7 (scale-out): several permaproxy replicas on one S3 bucket, served
//! by a real Garage server on loopback (never a mock), with the stand-in
//! Studio API and Replicate file host of the other suites.
//!
//! One test binary (`cargo test --test s3`); every test starts its own Garage
//! in a temp dir through `scripts/garage.sh`. Without a garage binary the
//! tests fail and say to run `scripts/install-garage.sh`.
//! - `replicas`: serving from another replica and from an empty disk,
//!   Range/HEAD from S3, multipart objects, delete propagation, two replicas
//!   storing the same source at once;
//! - `lifecycle`: the per-user limit on S3, cleanup on another replica with
//!   shared access times;
//! - `migrate`: `permaproxy migrate --to s3` from a disk store;
//! - `outage`: the bucket stopped and started again;
//! - `faults`: an upload cut mid-part, a dry run beside a live replica.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod garage;
mod lifecycle;
mod migrate;
mod outage;
mod replicas;

use common::*;
use garage::Garage;
use serde_json::json;

pub const GEN: &str = "/v1/images/generate";
pub const TOKEN: &str = "scale-out-admin-token-padded-to-32-chars";
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Larger than the 8 MiB multipart threshold of the S3 store.
pub const MULTIPART_SIZE: usize = 9 << 20;

/// A bucket, a database, a file host and a Studio API shared by the
/// replicas of a test. Replicas on one bucket share one database: an SQLite
/// file several processes on this machine open at once, or, in the Postgres
/// run of the suite, one database on that server.
pub struct World {
    pub garage: Garage,
    pub host: FileHost,
    pub api: StudioApi,
    pub database_url: String,
    _db_dir: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        let garage = Garage::up().await;
        let db_dir = tempfile::tempdir().expect("tempdir for the shared database");
        let database_url = match common::db::postgres_server() {
            Some(server) => common::db::fresh_postgres(&server).await,
            None => common::db::sqlite_url(db_dir.path()),
        };
        World {
            garage,
            host: FileHost::start().await,
            api: StudioApi::start().await,
            database_url,
            _db_dir: db_dir,
        }
    }

    /// A connection to the shared database.
    pub async fn db(&self) -> common::db::Db {
        common::db::Db::open(&self.database_url).await
    }

    /// Proxy settings for a replica on the bucket: S3 backend, the bucket's
    /// settings, an admin token, then `extra` (an empty value removes one).
    pub fn opts(&self, extra: &[(&str, &str)]) -> ProxyOptions {
        let mut opts = ProxyOptions::for_stands(&self.api, &self.host)
            .env("IMAGE_STORAGE_BACKEND", "s3")
            .env("DATABASE_URL", &self.database_url)
            .env("ADMIN_TOKEN", TOKEN);
        for (k, v) in self.garage.s3_env() {
            opts = opts.env(&k, &v);
        }
        for (k, v) in extra {
            opts = opts.env(k, v);
        }
        opts.env.retain(|(_, v)| !v.is_empty());
        opts
    }

    /// A replica on the bucket with its own fresh IMAGE_STORAGE_PATH.
    pub async fn replica(&self, extra: &[(&str, &str)]) -> Proxy {
        Proxy::start(self.opts(extra)).await
    }

    /// Serves `bytes` at `/pbxt/{name}` and has the upstream answer
    /// `{"output": [its URL]}`. Returns the source URL.
    pub fn source(&self, name: &str, bytes: &[u8], content_type: &str) -> String {
        let src = self
            .host
            .add_url(&format!("/pbxt/{name}"), bytes.to_vec(), content_type);
        self.api.set_generate_json(&json!({ "output": [src] }));
        src
    }

    /// Stores one image through a generate call on `proxy` as `user` and
    /// returns it (the default persist mode stores before answering).
    pub async fn store(
        &self,
        proxy: &Proxy,
        user: &str,
        name: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Img {
        let src = self.source(name, bytes, content_type);
        let r = generate(proxy, user).await;
        assert_eq!(r.status, 200, "generate: {}", r.text());
        let url = r.json()["output"][0].as_str().unwrap_or("").to_string();
        let hosted = parse_hosted(&url)
            .unwrap_or_else(|| panic!("{name} was not hosted: output {url:?} (source {src})"));
        assert_eq!(hosted.user, user);
        Img {
            hosted,
            bytes: bytes.to_vec(),
            content_type: content_type.to_string(),
            source_path: format!("/pbxt/{name}"),
        }
    }
}

/// One stored image, as a test knows it.
#[derive(Debug, Clone)]
pub struct Img {
    pub hosted: Hosted,
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// Its path on the file host.
    pub source_path: String,
}

impl Img {
    /// The object key the contract gives it: `images/{user}/{id}.{ext}`.
    pub fn object_key(&self) -> String {
        format!(
            "images/{}/{}.{}",
            self.hosted.user, self.hosted.image_id, self.hosted.ext
        )
    }
}

/// `POST /v1/images/generate` as `user`: the X-User-Id it claims, and the
/// session Studio API authenticates (trusted with [`TRUSTED_IDS`]).
pub async fn generate(p: &Proxy, user: &str) -> Reply {
    fetch(
        client()
            .post(p.url(GEN))
            .header("content-type", "application/json")
            .header("x-user-id", user)
            .header("authorization", session(user))
            .body(r#"{"prompt":"a lighthouse"}"#),
    )
    .await
}

/// GET an image from `p` by its hosted path, with extra request headers.
pub async fn get(p: &Proxy, img: &Img, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client().get(p.url(&img.hosted.path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    fetch(rb).await
}

pub async fn head(p: &Proxy, img: &Img) -> Reply {
    fetch(client().head(p.url(&img.hosted.path))).await
}

/// A full 200 answer with the image's exact bytes and every caching header.
#[track_caller]
pub fn assert_serves(r: &Reply, img: &Img, who: &str) {
    assert_eq!(
        r.status,
        200,
        "{who}: GET {} status; body {:?}",
        img.hosted.path,
        r.text().chars().take(300).collect::<String>()
    );
    assert_same_bytes(&r.body, &img.bytes, &format!("{who}: {}", img.hosted.path));
    assert_eq!(r.h("content-type"), img.content_type, "{who}: Content-Type");
    assert_eq!(r.h("content-length"), img.bytes.len().to_string(), "{who}");
    assert_eq!(r.h("cache-control"), IMMUTABLE, "{who}: Cache-Control");
    let etag = r.h("etag");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{who}: ETag must be strong and quoted, got {etag:?}"
    );
}

/// The status `p` answers for `img` now.
pub async fn status_of(p: &Proxy, img: &Img) -> u16 {
    fetch(client().get(p.url(&img.hosted.path))).await.status
}

/// `permaproxy_hosted_requests_total{tier="memory"}` of `p`.
pub async fn memory_hits(p: &Proxy) -> f64 {
    p.metric(r#"permaproxy_hosted_requests_total{tier="memory"}"#)
        .await
}

/// Image files (not the database, state or staging) under a replica's
/// IMAGE_STORAGE_PATH.
pub fn local_images(p: &Proxy) -> Vec<std::path::PathBuf> {
    files_under(p.storage_path())
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(p.storage_path()).unwrap_or(f);
            let rel = rel.to_string_lossy();
            !rel.starts_with('~') && !rel.starts_with("permaproxy.db")
        })
        .collect()
}

/// A test's env pairs as the `&[(&str, &str)]` that `Proxy::run` takes.
pub fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
