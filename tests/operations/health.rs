//! Liveness and readiness on the admin listener, and the public health path.

use crate::common::*;
use crate::{dead_upstream, get, stands};

async fn readyz(p: &Proxy) -> Reply {
    fetch(client().get(format!("{}/readyz", p.admin()))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_storage_path_cannot_be_written() {
    let s = stands(&[]).await;
    let r = readyz(&s.proxy).await;
    assert_eq!(r.status, 200, "ready at start: {}", r.text());
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(r.json()["storage"], "ok");
    assert_eq!(r.json()["upstream"], "ok");

    // Tests run as root, and root ignores permission bits, so `chmod 0555`
    // would not stop a write. Instead the storage directory is moved away
    // and a regular file put at its path: creating anything "inside" a file
    // fails with ENOTDIR for every user, root included.
    let storage = s.proxy.storage_path().to_path_buf();
    let aside = storage.with_extension("moved-away");
    std::fs::rename(&storage, &aside).expect("move the storage dir away");
    std::fs::write(&storage, b"not a directory").expect("put a file in its place");

    let p = &s.proxy;
    assert!(
        wait_until(secs(10), || async move { readyz(p).await.status == 503 }).await,
        "readyz stayed 200 with an unwritable storage path"
    );
    let r = readyz(&s.proxy).await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["status"], "not_ready", "{v}");
    assert_ne!(v["storage"], "ok", "{v}");
    assert_eq!(v["upstream"], "ok", "only storage is at fault: {v}");
    // Liveness is not readiness: the process is still alive.
    let live = fetch(client().get(format!("{}/healthz", s.proxy.admin()))).await;
    assert_eq!(live.status, 200);

    // Put the directory back: ready again, no restart needed.
    std::fs::remove_file(&storage).expect("remove the file");
    std::fs::rename(&aside, &storage).expect("move the storage dir back");
    assert!(
        wait_until(secs(10), || async move { readyz(p).await.status == 200 }).await,
        "readyz did not recover: {}",
        readyz(p).await.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_upstream_is_down() {
    let proxy = Proxy::start(ProxyOptions::new(&dead_upstream())).await;
    let r = readyz(&proxy).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "not_ready", "{v}");
    assert_eq!(v["upstream"], "unreachable", "{v}");
    assert_eq!(v["storage"], "ok", "{v}");
    let live = fetch(client().get(format!("{}/healthz", proxy.admin()))).await;
    assert_eq!(live.status, 200, "liveness does not depend on the upstream");
    assert_eq!(live.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_health_path_is_answered_not_forwarded() {
    let s = stands(&[]).await;
    for path in [
        "/__permaproxy/healthz",
        "/__permaproxy/healthz?probe=railway",
    ] {
        let r = get(&s.proxy, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.h("content-type").starts_with("application/json"),
            "{path}: {:?}",
            r.h("content-type")
        );
        assert_eq!(r.json()["status"], "ok", "{path}");
    }
    assert_eq!(s.api.count("/__permaproxy/healthz"), 0, "never forwarded");
    assert_eq!(s.api.total_requests(), 0, "nothing reached the upstream");
    // Its neighbours are ordinary paths and are forwarded.
    assert_eq!(get(&s.proxy, "/__permaproxy/other", &[]).await.status, 404);
    assert_eq!(s.api.count("/__permaproxy/other"), 1);
}

/// A client that sends half a request to the admin listener is cut off
/// after the header read timeout (10 s), and never blocks anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_drops_a_client_that_never_finishes_its_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = stands(&[]).await;
    let addr = s.proxy.admin().trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Others are served meanwhile.
    let live = fetch(client().get(format!("{}/healthz", s.proxy.admin()))).await;
    assert_eq!(live.status, 200);
    // The half request is never answered; the connection is closed. 30 s
    // is a bound on a hang, not a timing assertion (the timeout is 10 s).
    let mut buf = Vec::new();
    let read = tokio::time::timeout(secs(30), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the half request held its connection for 30 s"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "a half request was answered: {}",
        String::from_utf8_lossy(&buf)
    );
}

/// `permaproxy health`, the container's HEALTHCHECK: it finds the public
/// listener from the same settings as `serve` (PORT alone, as Railway and
/// the image set it, means 0.0.0.0:$PORT, asked on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_asks_the_public_listener() {
    let s = stands(&[]).await;
    let addr = s.proxy.addr();
    let port = addr.rsplit(':').next().unwrap_or_default();
    let (code, _, stderr) = Proxy::run(
        &["health"],
        &[("LISTEN_ADDR", ""), ("PORT", port)],
        secs(10),
    )
    .await;
    assert_eq!(code, 0, "health with PORT={port}: {stderr}");
    let (code, _, stderr) = Proxy::run(&["health"], &[("LISTEN_ADDR", &addr)], secs(10)).await;
    assert_eq!(code, 0, "health with LISTEN_ADDR={addr}: {stderr}");

    let dead = free_port().to_string();
    let (code, _, stderr) = Proxy::run(
        &["health"],
        &[("LISTEN_ADDR", ""), ("PORT", &dead)],
        secs(10),
    )
    .await;
    assert_eq!(code, 1, "health with nothing on port {dead}: {stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{dead}")), "{stderr}");
}
