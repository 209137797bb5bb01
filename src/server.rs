//! Assembles the Pingora server: the public proxy, the admin listener and
//! the maintenance loop (recovery, cleanup, access-time flushes).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::hosting::Hosting;
use crate::proxy::{App, IN_FLIGHT};

/// Access times are written at most this often.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Pending images whose storage failed are tried again this often.
const RETRY_PENDING_EVERY: Duration = Duration::from_secs(30);

/// Opens storage with a short-lived runtime: Pingora starts its own
/// runtimes only once the server runs.
pub fn open_hosting(cfg: &Arc<Config>) -> Result<Arc<Hosting>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(Hosting::open(cfg.clone()))
}

pub fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let hosting = open_hosting(&cfg)?;
    let conf = ServerConf {
        threads: cfg.worker_threads,
        // The grace period is an upper bound here: the watcher below exits
        // as soon as the requests in flight are done.
        grace_period_seconds: Some(cfg.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let app = App::new(cfg.clone(), hosting.clone())?;
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, app, "permaproxy");
    proxy.add_tcp(&cfg.listen_addr);
    server.add_service(proxy);

    let mut admin = Service::new(
        "permaproxy-admin".to_string(),
        Admin {
            cfg: cfg.clone(),
            hosting: hosting.clone(),
        },
    );
    admin.add_tcp(&cfg.metrics_addr);
    server.add_service(admin);
    server.add_service(background_service(
        "permaproxy-maintenance",
        Maintenance {
            hosting: hosting.clone(),
        },
    ));

    watch_shutdown(&server, hosting.clone(), cfg.shutdown_grace);
    tracing::info!(
        listen = %cfg.listen_addr,
        admin = %cfg.metrics_addr,
        upstream = %cfg.upstream.url,
        storage = %cfg.storage_path.display(),
        persist_mode = ?cfg.persist_mode,
        "permaproxy starting"
    );
    server.run(RunArgs::default());
    flush(&hosting);
    Ok(())
}

fn flush(hosting: &Hosting) {
    if let Err(e) = hosting.index.flush() {
        tracing::error!(error = %e, "could not write access times");
    }
    // The access log is written in batches: the last one must not be lost.
    crate::logging::flush();
}

/// Pingora sleeps for the whole grace period after SIGTERM. This exits as
/// soon as the requests in flight have finished instead. Downloads still
/// running are left to the journal, which recovers them at the next start.
fn watch_shutdown(server: &Server, hosting: Arc<Hosting>, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::GracefulTerminate) => {
                let deadline = Instant::now() + grace;
                // Give requests accepted just before the signal a moment to
                // register, then wait for them.
                std::thread::sleep(Duration::from_millis(50));
                while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                tracing::info!(
                    in_flight = IN_FLIGHT.load(Ordering::SeqCst),
                    "graceful stop complete"
                );
                flush(&hosting);
                std::process::exit(0);
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    });
}

fn later_interval(period: Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

struct Maintenance {
    hosting: Arc<Hosting>,
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let h = &self.hosting;
        let recovered = h.recover();
        if recovered > 0 {
            tracing::info!(
                recovered,
                "re-downloading images handed out before the last stop"
            );
        }
        let mut cleanup = tokio::time::interval(h.cfg.cleanup_interval);
        let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
        // Recovery ran just above and the index was listed at open, so
        // these start one period from now instead of repeating that work.
        let mut retry_tick = later_interval(RETRY_PENDING_EVERY);
        let shared = h.cfg.storage_backend == crate::config::StorageBackend::S3;
        let mut refresh_tick = later_interval(h.cfg.cache_revalidate.max(Duration::from_secs(5)));
        loop {
            tokio::select! {
                // on_first_hit is lazy by design: only requests (and a
                // restart) start its downloads.
                _ = retry_tick.tick(), if h.cfg.persist_mode != crate::config::PersistMode::OnFirstHit => {
                    h.recover();
                }
                _ = refresh_tick.tick(), if shared => {
                    if let Err(e) = h.refresh_from_store().await {
                        tracing::warn!(error = %e, "could not refresh the index from the bucket");
                    }
                }
                _ = cleanup.tick() => {
                    let deleted = crate::lifecycle::cleanup(h, false).await;
                    if !deleted.is_empty() {
                        tracing::info!(deleted = deleted.len(), "cleanup finished");
                    }
                }
                _ = flush_tick.tick() => {
                    let hosting = h.clone();
                    let _ = tokio::task::spawn_blocking(move || flush(&hosting)).await;
                    h.share_access().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
