//! Stopping: the drain, then the grace period.
//!
//! On SIGTERM the process first *drains* for `SHUTDOWN_DRAIN_SECS`: `/readyz`
//! and the public health path answer 503 at once, while the listeners keep
//! accepting and serving as before. A load balancer (Kubernetes endpoints, a
//! cloud target group) needs a few seconds to notice and stop sending;
//! closing the port first would turn those seconds into refused connections.
//! Then Pingora's graceful stop starts: the listeners close, the requests in
//! flight get up to `SHUTDOWN_GRACE_SECS`, and the process exits as soon as
//! they are done. SIGINT stops at once, during the drain too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::hosting::Hosting;
use crate::proxy::IN_FLIGHT;

/// Set by SIGTERM; never cleared (the process is on its way out).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Has a SIGTERM started the stop? Health answers 503 from then on.
pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// Pingora's signal watch (SIGTERM graceful, SIGQUIT upgrade, SIGINT fast)
/// with the drain put in front of the graceful stop.
pub struct DrainingSignals {
    pub drain: Duration,
}

/// A signal stream, or `None` when it cannot be installed (then that signal
/// keeps its default action, as it would without Pingora).
fn listen(kind: SignalKind) -> Option<Signal> {
    match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, signal = ?kind, "cannot watch a signal");
            None
        }
    }
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainingSignals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = listen(SignalKind::terminate());
        let mut quit = listen(SignalKind::quit());
        let mut int = listen(SignalKind::interrupt());
        tokio::select! {
            _ = next(&mut int) => return ShutdownSignal::FastShutdown,
            _ = next(&mut quit) => return ShutdownSignal::GracefulUpgrade,
            _ = next(&mut term) => {}
        }
        DRAINING.store(true, Ordering::SeqCst);
        if !self.drain.is_zero() {
            tracing::info!(
                drain_secs = self.drain.as_secs(),
                "SIGTERM: draining; health answers 503, the listeners still accept"
            );
            tokio::select! {
                _ = tokio::time::sleep(self.drain) => {}
                _ = next(&mut int) => return ShutdownSignal::FastShutdown,
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Pingora sleeps for the whole grace period after the graceful stop starts.
/// This exits as soon as the requests in flight have finished instead.
/// Downloads still running are left to the journal, which recovers them at
/// the next start.
pub fn exit_when_idle(
    server: &Server,
    hosting: Arc<Hosting>,
    engine: tokio::runtime::Handle,
    grace: Duration,
) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::GracefulTerminate) => {
                let deadline = Instant::now() + grace;
                // Give requests accepted just before the listeners closed a
                // moment to register, then wait for them.
                std::thread::sleep(Duration::from_millis(50));
                while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                tracing::info!(
                    in_flight = IN_FLIGHT.load(Ordering::SeqCst),
                    "graceful stop complete"
                );
                engine.block_on(hosting.shutdown());
                std::process::exit(0);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    });
}
