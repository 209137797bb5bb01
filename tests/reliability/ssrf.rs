//! The SSRF guard: a download never connects to a loopback or private
//! address unless its host is listed exactly in `REPLICATE_HOSTS`, whether
//! the address is an IP literal, a redirect target or what a name resolved to.

use crate::common::*;
use crate::hostile::assert_refused;
use crate::*;
use std::process::{Child, Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_sources_need_an_exact_listing() {
    // `*.0.0.1:PORT` matches the IP literal 127.0.0.1, but only a host
    // listed exactly may be a private address. The allowed file host sits on
    // 127.0.0.2, so 127.0.0.1 is listed by the wildcard only.
    let host = FileHost::start_on("127.0.0.2:0").await;
    let inner = FileHost::start().await;
    let api = StudioApi::start().await;
    let port = inner.addr().rsplit_once(':').unwrap().1.to_string();
    let opts = ProxyOptions::new(&api.url())
        .env(
            "REPLICATE_HOSTS",
            &format!("{},*.0.0.1:{port}", host.addr()),
        )
        .env("IMAGE_ALLOW_HTTP_SOURCES", "true");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    let secret = inner.add_url("/latest/meta-data.png", fixtures::PNG, "image/png");
    assert_refused(
        &s,
        &secret,
        "loopback matched by a wildcard",
        "not listed exactly",
    )
    .await;
    s.host.redirect("/hop.png", &secret);
    assert_refused(
        &s,
        &s.host.url("/hop.png"),
        "redirect to loopback",
        "not listed exactly",
    )
    .await;
    assert_eq!(
        inner.total_hits(),
        0,
        "no connection to the private address"
    );
}

/// A proxy in its own mount namespace whose /etc/hosts maps test names to
/// 127.0.0.1 (the machine's resolver knows no such names otherwise).
struct NsProxy {
    child: Child,
    base: String,
    admin: String,
    dir: tempfile::TempDir,
    storage: std::path::PathBuf,
}

impl NsProxy {
    async fn start(upstream: &str, env: &[(&str, &str)], hosts: &str) -> Option<NsProxy> {
        let dir = tempfile::tempdir().unwrap();
        let hosts_file = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let storage = dir.path().join("storage");
        let (port, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$1" /etc/hosts && exec "$2" serve"#,
        ])
        .arg("sh")
        .arg(&hosts_file)
        .arg(common::proxy::BIN);
        common::proxy::scrub_env(&mut cmd);
        cmd.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("UPSTREAM_URL", upstream)
            .env("IMAGE_STORAGE_PATH", &storage)
            .env("LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIP: cannot run unshare for a private /etc/hosts: {e}");
                return None;
            }
        };
        let admin = format!("http://127.0.0.1:{admin_port}");
        let deadline = std::time::Instant::now() + secs(20);
        let up = loop {
            if !matches!(child.try_wait(), Ok(None)) {
                break false;
            }
            let health = client().get(format!("{admin}/healthz")).send().await;
            if health.is_ok_and(|r| r.status().as_u16() == 200) {
                break true;
            }
            if std::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
            // The proxy itself ran and failed: that is a real failure.
            assert!(
                !log.contains("permaproxy starting"),
                "proxy in a mount namespace failed:\n{log}"
            );
            eprintln!("SKIP: no private mount namespace for /etc/hosts here:\n{log}");
            return None;
        }
        Some(NsProxy {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin,
            dir,
            storage,
        })
    }

    /// One generate call whose upstream answers three outputs: the first
    /// and last must keep their URLs, the middle one must be hosted and
    /// serve `good`. Returns the hosted path.
    async fn expect_kept_served_kept(
        &self,
        first: &str,
        good: &[u8],
        last: &str,
        what: &str,
    ) -> String {
        let r = fetch(
            client()
                .post(format!("{}{GEN}", self.base))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let out = r.json()["output"].clone();
        assert_kept(&out[0], first);
        assert_kept(&out[2], last);
        let h = hosted(&out[1]);
        let got = fetch(client().get(format!("{}{}", self.base, h.path))).await;
        assert_serves(&got, good, what);
        h.path
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    async fn metric(&self, query: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        common::metrics::metric_value(&text, query).unwrap_or(0.0)
    }
}

impl Drop for NsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_loopback_are_refused_unless_listed_exactly() {
    if !crate::is_root() {
        eprintln!("SKIP names_resolving_to_loopback...: needs root for a private /etc/hosts");
        return;
    }
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let port = host.addr().rsplit_once(':').unwrap().1.to_string();
    let hosts = "127.0.0.1 localhost\n127.0.0.1 img.sneaky.test\n127.0.0.1 ok.sneaky.test\n";
    let listed = format!("{},*.sneaky.test:{port},ok.sneaky.test:{port}", host.addr());
    let env = [
        ("REPLICATE_HOSTS", listed.as_str()),
        ("IMAGE_ALLOW_HTTP_SOURCES", "true"),
    ];
    let Some(proxy) = NsProxy::start(&api.url(), &env, hosts).await else {
        return;
    };
    let sneaky = format!("http://img.sneaky.test:{port}/a.png");
    let allowed = format!("http://ok.sneaky.test:{port}/b.png");
    host.add("/a.png", fixtures::unique_png(1), "image/png");
    let good = fixtures::unique_png(2);
    host.add("/b.png", good.clone(), "image/png");
    host.redirect("/hop.png", &sneaky);
    let hop = host.url("/hop.png");
    api.set_generate_json(&serde_json::json!({"output": [sneaky, allowed, hop]}));
    // The exact entry resolves through the same /etc/hosts and is allowed:
    // the refusals are the address guard, not a failed lookup.
    let path = proxy
        .expect_kept_served_kept(&sneaky, &good, &hop, "exactly listed host")
        .await;
    let image_id = parse_hosted(&path).expect("a hosted path").image_id;
    assert_eq!(proxy.metric(REJECTED).await, 2.0);
    assert_logged(&proxy.log_text(), &sneaky, "forbidden addresses");
    assert_logged(&proxy.log_text(), &hop, "forbidden addresses");
    assert_eq!(host.hits("/a.png"), 0, "never connected for the wildcard");
    let stored = stored_files(&proxy.storage);
    assert!(
        stored
            .iter()
            .all(|f| f.to_string_lossy().contains(&image_id)),
        "{stored:?}"
    );
}

/// Finding 11: an exact entry allowed private addresses for its host on any
/// port that some other entry let through. The entry now pins its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_11_an_exact_entry_pins_its_port() {
    if !crate::is_root() {
        eprintln!("SKIP finding_11...: needs root for a private /etc/hosts");
        return;
    }
    let host = FileHost::start().await;
    let inner = FileHost::start().await;
    let api = StudioApi::start().await;
    let port = |h: &FileHost| h.addr().rsplit_once(':').unwrap().1.to_string();
    let (public_port, private_port) = (port(&host), port(&inner));
    let hosts = "127.0.0.1 localhost\n127.0.0.1 files.internal.test\n";
    // files.internal.test is listed exactly on the file host's port only;
    // the wildcard lets any subdomain through on the inner service's port.
    let listed = format!(
        "{},files.internal.test:{public_port},*.internal.test:{private_port}",
        host.addr()
    );
    let env = [
        ("REPLICATE_HOSTS", listed.as_str()),
        ("IMAGE_ALLOW_HTTP_SOURCES", "true"),
    ];
    let Some(proxy) = NsProxy::start(&api.url(), &env, hosts).await else {
        return;
    };
    inner.add("/secret.png", fixtures::unique_png(11), "image/png");
    let good = fixtures::unique_png(12);
    host.add("/ok.png", good.clone(), "image/png");
    let other_port = format!("http://files.internal.test:{private_port}/secret.png");
    let pinned = format!("http://files.internal.test:{public_port}/ok.png");
    host.redirect("/hop.png", &other_port);
    let hop = host.url("/hop.png");
    api.set_generate_json(&serde_json::json!({"output": [other_port, pinned, hop]}));
    proxy
        .expect_kept_served_kept(
            &other_port,
            &good,
            &hop,
            "the pinned port of an exact entry",
        )
        .await;
    assert_logged(&proxy.log_text(), &other_port, "forbidden addresses");
    assert_eq!(inner.total_hits(), 0, "never connected to the other port");
}

/// Finding 12 (issue 20): special-purpose blocks outside the usual
/// private ranges (the 6to4 relay anycast 192.88.99.0/24, AS112's
/// 192.31.196.0/24) counted as public, and a download connected to them.
/// IP literals matched by a wildcard entry are now refused before any
/// connection (the full IANA table is a unit test in src/sources.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_12_special_purpose_literals_are_refused() {
    let host = FileHost::start().await;
    let api = StudioApi::start().await;
    let port = host.addr().rsplit_once(':').unwrap().1.to_string();
    let opts = ProxyOptions::for_stands(&api, &host)
        .env(
            "REPLICATE_HOSTS",
            &format!("{},*.99.1:{port},*.196.1:{port}", host.addr()),
        )
        // Were a connection tried, it should fail fast, not retry.
        .env("IMAGE_DOWNLOAD_RETRIES", "0")
        .env("IMAGE_DOWNLOAD_CONNECT_TIMEOUT_MS", "1000");
    let proxy = Proxy::start(opts).await;
    let s = Stands { host, api, proxy };
    for literal in ["192.88.99.1", "192.31.196.1"] {
        let src = format!("http://{literal}:{port}/out-0.png");
        assert_refused(&s, &src, literal, "not listed exactly").await;
    }
}
