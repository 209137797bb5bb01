//! A throwaway one-node Garage server per test, through `scripts/garage.sh`,
//! plus a direct bucket client (object_store) so tests can look at the
//! bucket itself, not only at what the proxy says about it.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{Attributes, GetOptions, ObjectStore};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/garage.sh");

/// The same search the script does: GARAGE_BIN, PATH, then $CARGO_HOME/bin.
fn garage_binary() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("GARAGE_BIN").filter(|b| !b.is_empty()) {
        let b = PathBuf::from(b);
        return b.is_file().then_some(b);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("garage");
            if c.is_file() {
                return Some(c);
            }
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let c = cargo_home.join("bin/garage");
    c.is_file().then_some(c)
}

/// A key exactly as written (`Path::from` would percent-encode `~`).
pub fn path(key: &str) -> ObjectPath {
    ObjectPath::parse(key).unwrap_or_else(|e| panic!("object key {key:?}: {e}"))
}

/// One Garage instance in its own temp dir; `Drop` runs `garage.sh down`.
pub struct Garage {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    /// DIR/env as written by the script.
    vars: Vec<(String, String)>,
}

async fn script(cmd: &str, dir: &Path) {
    let out = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .arg(cmd)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {SCRIPT} {cmd}: {e}"));
    assert!(
        out.status.success(),
        "`scripts/garage.sh {cmd} {}` failed ({}):\n{}\n--- garage.log tail ---\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log_tail(dir)
    );
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default();
    crate::common::proxy::tail(&log, 30)
}

impl Garage {
    /// A fresh instance with bucket `images` and a key allowed on it.
    /// Fails (never skips) when garage is not installed.
    pub async fn up() -> Garage {
        let bin = garage_binary();
        assert!(
            bin.is_some(),
            "the S3 tests need a real Garage server, and no `garage` binary was found \
             (GARAGE_BIN, PATH, ~/.cargo/bin). Install it with scripts/install-garage.sh \
             (CI does this through scripts/setup.sh --with-garage)."
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("garage");
        let mut g = Garage {
            _tmp: tmp,
            dir,
            vars: Vec::new(),
        };
        script("up", &g.dir).await;
        g.read_env();
        g
    }

    fn read_env(&mut self) {
        let text = std::fs::read_to_string(self.dir.join("env"))
            .unwrap_or_else(|e| panic!("read {}/env: {e}", self.dir.display()));
        self.vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        for k in [
            "S3_ENDPOINT",
            "S3_BUCKET",
            "S3_REGION",
            "S3_FORCE_PATH_STYLE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(!self.var(k).is_empty(), "{k} missing from garage env");
        }
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The settings a proxy needs to use this bucket.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(k, _)| k.starts_with("S3_") || k.starts_with("AWS_"))
            .cloned()
            .collect()
    }

    /// Stops the server, keeping its data (an outage).
    pub async fn stop(&self) {
        script("stop", &self.dir).await;
    }

    /// Starts it again on the same ports with the same data.
    pub async fn start(&mut self) {
        script("start", &self.dir).await;
        self.read_env();
    }

    /// A direct client on the bucket.
    pub fn bucket(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.var("S3_ENDPOINT"))
            .with_allow_http(true)
            .with_bucket_name(self.var("S3_BUCKET"))
            .with_region(self.var("S3_REGION"))
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(self.var("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(self.var("AWS_SECRET_ACCESS_KEY"))
            .build()
            .expect("bucket client")
    }

    /// Every object key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .bucket()
            .list(None)
            .map_ok(|o| o.location.to_string())
            .try_collect()
            .await
            .expect("list the bucket");
        keys.sort();
        keys
    }

    /// Image keys only (the shared `~state/` folder left out).
    pub async fn image_keys(&self) -> Vec<String> {
        let mut keys = self.keys().await;
        keys.retain(|k| !k.contains("/~state/"));
        keys
    }

    /// An object's bytes and attributes (content type, x-amz-meta-*).
    pub async fn object(&self, key: &str) -> Option<(Bytes, Attributes)> {
        match self
            .bucket()
            .get_opts(&path(key), GetOptions::default())
            .await
        {
            Ok(r) => {
                let attrs = r.attributes.clone();
                Some((r.bytes().await.expect("read object"), attrs))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("GET {key}: {e}"),
        }
    }

    /// Multipart uploads begun and neither completed nor aborted, as
    /// `garage bucket info` counts them.
    pub async fn unfinished_uploads(&self) -> u64 {
        let bin = garage_binary().expect("garage binary");
        let out = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(self.var("GARAGE_CONFIG"))
            .args(["bucket", "info", self.var("S3_BUCKET")])
            .output()
            .await
            .expect("garage bucket info");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "garage bucket info: {text}");
        text.lines()
            .find_map(|l| l.strip_prefix("Unfinished uploads:"))
            .and_then(|rest| rest.split_whitespace().next())
            .map_or(0, |n| n.parse().unwrap_or(0))
    }

    /// Overwrites an object with `bytes`, behind the proxy's back.
    pub async fn overwrite(&self, key: &str, bytes: Vec<u8>) {
        self.bucket()
            .put(&path(key), bytes.into())
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    pub async fn delete(&self, key: &str) {
        self.bucket()
            .delete(&path(key))
            .await
            .unwrap_or_else(|e| panic!("DELETE {key}: {e}"));
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- garage log tail ({}) ---\n{}",
                self.dir.display(),
                log_tail(&self.dir)
            );
        }
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("down")
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .output();
    }
}
