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
