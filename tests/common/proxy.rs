//! Runs the real `permaproxy` binary on free loopback ports.

use super::{free_port, FileHost, StudioApi};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_permaproxy");

/// Settings this harness controls; removed from the inherited environment so
/// that a developer's shell cannot leak into a test.
const CONTROLLED_PREFIXES: &[&str] = &[
    "DATABASE_",
    "UPSTREAM_URL",
    "LISTEN_ADDR",
    "PORT",
    "METRICS_ADDR",
    "PUBLIC_BASE_URL",
    "IMAGE_",
    "REPLICATE_HOSTS",
    "TRUST_FORWARDED_FOR",
    "TRUSTED_PROXIES",
    "ADMIN_TOKEN",
    "LOG_FORMAT",
    "RUST_LOG",
    "SHUTDOWN_",
    "WORKER_THREADS",
    "S3_",
    "PERMAPROXY_",
    "JWT_",
    "AWS_",
    "UPSTREAM_",
    "RAILWAY_",
];

/// How to start a proxy. `env` entries override the harness defaults.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    pub upstream: String,
    pub env: Vec<(String, String)>,
    /// IMAGE_STORAGE_PATH; default `<proxy tempdir>/storage`.
    pub storage: Option<PathBuf>,
    /// Arguments placed before the `serve` subcommand (e.g. `--config FILE`).
    pub global_args: Vec<String>,
}

impl ProxyOptions {
    pub fn new(upstream: &str) -> ProxyOptions {
        ProxyOptions {
            upstream: upstream.to_string(),
            ..Default::default()
        }
    }

    /// The usual set-up: upstream = `api`, REPLICATE_HOSTS = `host`, http sources allowed.
    pub fn for_stands(api: &StudioApi, host: &FileHost) -> ProxyOptions {
        ProxyOptions::new(&api.url())
            .env("REPLICATE_HOSTS", &host.addr())
            .env("IMAGE_ALLOW_HTTP_SOURCES", "true")
    }

    pub fn env(mut self, name: &str, value: &str) -> ProxyOptions {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Applies a test's overrides on top of a suite's defaults; an empty
    /// value removes the setting, so a test can opt out of a default.
    pub fn overrides(mut self, extra: &[(&str, &str)]) -> ProxyOptions {
        for (k, v) in extra {
            self = self.env(k, v);
        }
        self.env.retain(|(_, v)| !v.is_empty());
        self
    }

    pub fn storage(mut self, path: &Path) -> ProxyOptions {
        self.storage = Some(path.to_path_buf());
        self
    }

    pub fn global_arg(mut self, arg: &str) -> ProxyOptions {
        self.global_args.push(arg.to_string());
        self
    }
}

pub struct Proxy {
    opts: ProxyOptions,
    dir: tempfile::TempDir,
    storage: PathBuf,
    database_url: String,
    child: Option<Child>,
    listen_port: u16,
    admin_port: u16,
    generation: u32,
    client: reqwest::Client,
}

/// Removes from `cmd` every inherited variable the harness controls, so a
/// developer's shell cannot leak settings into a test.
pub fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if CONTROLLED_PREFIXES.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k);
        }
    }
}

fn scrubbed_command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    scrub_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Proxy {
    /// Starts `permaproxy serve` and waits until admin `/healthz` answers 200.
    pub async fn start(opts: ProxyOptions) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = opts
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        let mut opts = opts;
        let database_url = match opts.env.iter().find(|(k, _)| k == "DATABASE_URL") {
            Some((_, v)) => v.clone(),
            None => match super::db::postgres_server() {
                // The Postgres run of the suite: a fresh database per proxy,
                // kept across its restarts.
                Some(server) => {
                    let url = super::db::fresh_postgres(&server).await;
                    opts = opts.env("DATABASE_URL", &url);
                    url
                }
                None => super::db::sqlite_url(&storage),
            },
        };
        let mut p = Proxy {
            opts,
            dir,
            storage,
            database_url,
            child: None,
            listen_port: 0,
            admin_port: 0,
            generation: 0,
            client: super::client(),
        };
        p.spawn_and_wait().await;
        p
    }

    async fn spawn_and_wait(&mut self) {
        // A port picked by bind-and-drop can be taken before the child binds
        // it; retry a few times with fresh ports when that is what happened.
        for attempt in 0..3 {
            self.spawn_child();
            match self.wait_healthy(Duration::from_secs(30)).await {
                Ok(()) => return,
                Err(why) => {
                    let log = self.log_text();
                    let in_use = log.contains("in use") || log.contains("AddrInUse");
                    if let Some(mut c) = self.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    if in_use && attempt < 2 {
                        continue;
                    }
                    panic!(
                        "permaproxy did not become healthy: {why}\n--- last 50 log lines ({}) ---\n{}",
                        self.log_path().display(),
                        tail(&log, 50)
                    );
                }
            }
        }
    }

    fn spawn_child(&mut self) {
        self.generation += 1;
        self.listen_port = free_port();
        self.admin_port = free_port();
        let log = File::create(self.log_path()).expect("create log file");
        let mut cmd = scrubbed_command(BIN);
        cmd.args(&self.opts.global_args)
            .arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.listen_port))
            .env("METRICS_ADDR", format!("127.0.0.1:{}", self.admin_port))
            .env("UPSTREAM_URL", &self.opts.upstream)
            .env("IMAGE_STORAGE_PATH", &self.storage)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}")));
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/healthz", self.admin());
        // Pingora starts its services one after another: the admin listener
        // can answer before the public one accepts, so wait for both.
        let public = format!("{}/__permaproxy/healthz", self.base());
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("process exited early with {status}"));
                }
            }
            let ok = |r: reqwest::Result<reqwest::Response>| {
                r.is_ok_and(|resp| resp.status().as_u16() == 200)
            };
            if ok(self.client.get(&url).send().await) && ok(self.client.get(&public).send().await) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("GET {url} not 200 within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:P1` (public listener).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.listen_port)
    }

    /// `127.0.0.1:P1`, for raw requests.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.listen_port)
    }

    /// `http://127.0.0.1:P2` (admin listener).
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// `base() + path`
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// DATABASE_URL of this proxy (kept across restarts).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A connection to this proxy's database, for looking at its rows.
    pub async fn db(&self) -> super::db::Db {
        super::db::Db::open(&self.database_url).await
    }

    /// IMAGE_STORAGE_PATH of this proxy (kept across restarts).
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    /// The temp dir owned by this proxy (logs, default storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Log file of the current process (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("proxy-{}.log", self.generation))
    }

    /// Everything the current process printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Logs of every process this Proxy started, oldest first.
    pub fn all_logs(&self) -> String {
        (1..=self.generation)
            .map(|g| {
                std::fs::read_to_string(self.dir.path().join(format!("proxy-{g}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(nix::sys::signal::Signal::SIGINT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sets (or replaces) a setting for the next [`Proxy::restart`].
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.opts.env.retain(|(k, _)| k != name);
        self.opts.env.push((name.to_string(), value.to_string()));
    }

    /// Stops the process if it still runs (SIGTERM, then SIGKILL after 15 s)
    /// and starts a new one with the same settings and storage dir.
    pub async fn restart(&mut self) {
        if self.wait_exit(Duration::ZERO).await.is_none() && self.child.is_some() {
            self.sigterm();
            if self.wait_exit(Duration::from_secs(15)).await.is_none() {
                self.kill9();
            }
        }
        self.child = None;
        self.spawn_and_wait().await;
    }

    /// `GET admin /metrics` as text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.admin()))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200, "GET /metrics status");
        resp.text().await.expect("metrics body")
    }

    /// Sum of the samples matching `query` (`name` or `name{label="v",...}`;
    /// the given labels must be present, others may be too). 0.0 when none.
    pub async fn metric(&self, query: &str) -> f64 {
        super::metrics::metric_value(&self.metrics().await, query).unwrap_or(0.0)
    }

    /// Runs the binary with `args` and `env` (harness defaults: free ports, a
    /// temp storage dir), waits up to `timeout`; returns (exit code, stdout, stderr).
    /// Panics if it has not exited by then.
    pub async fn run(
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> (i32, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        let mut cmd = scrubbed_command(BIN);
        cmd.args(args)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("IMAGE_STORAGE_PATH", dir.path().join("storage"))
            .env("LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`permaproxy {}` still running after {timeout:?}\n--- stderr ---\n{}",
                    args.join(" "),
                    tail(&std::fs::read_to_string(&err_path).unwrap_or_default(), 50)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        (status.code().unwrap_or(-1), stdout, stderr)
    }

    /// Runs `permaproxy serve` with a bad config; expects a non-zero exit
    /// within 10 s. Returns (exit code, stderr).
    pub async fn run_expect_fail(env: &[(&str, &str)]) -> (i32, String) {
        let (code, stdout, stderr) = Self::run(&["serve"], env, Duration::from_secs(10)).await;
        assert_ne!(
            code,
            0,
            "permaproxy exited 0 with {env:?}\nstdout:\n{}\nstderr:\n{}",
            tail(&stdout, 50),
            tail(&stderr, 50)
        );
        (code, stderr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- permaproxy log tail ({}) ---\n{}",
                self.log_path().display(),
                tail(&self.log_text(), 50)
            );
        }
    }
}
