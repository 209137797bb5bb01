//! The admin listener's accept loop: the router on hyper's HTTP/1 server
//! with a header read timeout and a bound on connections.
//!
//! Why not `axum::serve`: it gives hyper no timer, so there is no header
//! read timeout at all, and a client that sends half a request line keeps
//! its connection and its task forever. The listener is meant to be
//! private, but a metrics port reachable from a pod network should not be
//! a slowloris target (nginx's `client_header_timeout` is 60 s).

use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use pingora::server::ShutdownWatch;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The client's address, in every request's extensions: the wrong-token
/// throttle is per client.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// A request's headers must arrive within this (from its first byte, and
/// on a kept-alive connection from the end of the previous answer).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; past it, accepting waits for one to end.
const MAX_CONNECTIONS: usize = 256;

/// In-flight requests (an export, say) get this long after a stop.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, app: Router, mut shutdown: ShutdownWatch) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => tokio::select! {
                    _ = shutdown.changed() => break,
                    r = listener.accept() => r.map(|(stream, peer)| (stream, peer, slot)),
                },
                Err(_) => break,
            },
        };
        let (stream, peer, slot) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, mostly: back off, do not spin.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(app.clone().layer(Extension(Peer(peer.ip())))),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("admin listener: requests still running after the drain; stopping anyway");
    }
}
