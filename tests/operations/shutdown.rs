//! Graceful stop: SIGTERM lets the request in flight finish, then exits
//! without sitting out the rest of the grace period.

use crate::common::*;
use crate::stands;
use std::time::{Duration, Instant};

const GRACE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits() {
    let mut s = stands(&[("SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string())]).await;
    let slow = tokio::spawn(fetch(client().get(s.proxy.url("/slow?ms=1500"))));
    // Signal only once the request is in the upstream's hands.
    let api = &s.api;
    assert!(
        wait_until(secs(10), || async move { api.count("/slow") == 1 }).await,
        "the slow request never reached the upstream"
    );
    let signalled = Instant::now();
    s.proxy.sigterm();

    let r = slow.await.expect("request task");
    assert_eq!(r.status, 200, "in-flight request after SIGTERM");
    assert_eq!(r.text(), "slow done");

    // An upper bound, not a measurement: the grace period plus a margin for
    // process teardown, counted from the signal.
    let bound = Duration::from_secs(GRACE_SECS) + Duration::from_millis(900);
    let status = s
        .proxy
        .wait_exit(bound.saturating_sub(signalled.elapsed()))
        .await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {bound:?} after SIGTERM\n{}",
            proxy::tail(&s.proxy.log_text(), 30)
        )
    });
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(s.api.count("/slow"), 1, "the request was not retried");
    assert!(
        s.proxy.log_text().contains("graceful stop complete"),
        "{}",
        proxy::tail(&s.proxy.log_text(), 30)
    );
}

/// SIGTERM with a drain: readiness and the public health path turn 503 at
/// once, the listener still takes new connections until the drain ends, a
/// request taken then and still running when it ends finishes, and the
/// process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_before_the_listeners_close() {
    const DRAIN_SECS: u64 = 6;
    let mut s = stands(&[
        ("SHUTDOWN_DRAIN_SECS", &DRAIN_SECS.to_string()),
        ("SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string()),
    ])
    .await;
    let admin = s.proxy.admin();
    let readyz = |a: String| async move { fetch(client().get(format!("{a}/readyz"))).await };
    assert_eq!(readyz(admin.clone()).await.status, 200, "ready before");

    let signalled = Instant::now();
    s.proxy.sigterm();
    let a = &admin;
    assert!(
        wait_until(
            secs(5),
            || async move { readyz(a.clone()).await.status == 503 }
        )
        .await,
        "/readyz did not turn 503 after SIGTERM"
    );
    assert_eq!(readyz(admin.clone()).await.json()["status"], "draining");
    let health = fetch(client().get(s.proxy.url("/__permaproxy/healthz"))).await;
    assert_eq!(health.status, 503, "public health path while draining");
    assert_eq!(health.json()["status"], "draining");
    // What a container's HEALTHCHECK runs: unhealthy while draining.
    let (code, _, stderr) =
        Proxy::run(&["health"], &[("LISTEN_ADDR", &s.proxy.addr())], secs(10)).await;
    assert_eq!(code, 1, "`permaproxy health` while draining: {stderr}");
    assert!(stderr.contains("503"), "{stderr}");

    // A new connection is still taken and proxied; it outlasts the drain.
    let slow_ms = DRAIN_SECS * 1000 + 1000;
    let r = fetch(client().get(s.proxy.url(&format!("/slow?ms={slow_ms}")))).await;
    assert_eq!(
        r.status,
        200,
        "request taken during the drain: {}",
        r.text()
    );
    assert_eq!(r.text(), "slow done");
    assert!(
        signalled.elapsed() >= Duration::from_secs(DRAIN_SECS),
        "the request outlasted the drain"
    );

    let bound = Duration::from_secs(DRAIN_SECS + GRACE_SECS) + Duration::from_millis(900);
    let status = s
        .proxy
        .wait_exit(bound.saturating_sub(signalled.elapsed()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still running {bound:?} after SIGTERM\n{}",
                proxy::tail(&s.proxy.log_text(), 30)
            )
        });
    assert!(status.success(), "exit status {status:?}");
    assert!(
        s.proxy.log_text().contains("graceful stop complete"),
        "{}",
        proxy::tail(&s.proxy.log_text(), 30)
    );
}
