//! Assembles the Pingora server: the public proxy, the admin listener and
//! the maintenance loop (recovery, cleanup, access-time flushes).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::admin::AdminService;
use crate::config::Config;
use crate::hosting::Hosting;
use crate::proxy::App;
use crate::shutdown::DrainingSignals;

/// Request times are written at most this often.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Gauges from the database, and interrupted deletes finished.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(15);
/// How often owed CDN purges are looked for (and sent, as the rate allows).
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// The engine's own runtime. It opens the database and the store before
/// Pingora's runtimes exist, and stays up for the life of the process:
/// connections opened on it stay registered with its I/O driver.
pub fn engine_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("permaproxy-engine")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

pub fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let engine = engine_runtime()?;
    let hosting = engine.block_on(Hosting::open(cfg.clone()))?;
    warn_about_setup(&cfg);
    let conf = ServerConf {
        threads: cfg.worker_threads,
        // The grace period is an upper bound here: the watcher below exits
        // as soon as the requests in flight are done. It starts after the
        // drain (src/shutdown.rs).
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

    let admin = AdminService::bind(cfg.clone(), hosting.clone())?;
    server.add_service(background_service("permaproxy-admin", admin));
    server.add_service(background_service(
        "permaproxy-maintenance",
        Maintenance {
            hosting: hosting.clone(),
        },
    ));

    crate::shutdown::exit_when_idle(
        &server,
        hosting.clone(),
        engine.handle().clone(),
        cfg.shutdown_grace,
    );
    tracing::info!(
        listen = %cfg.listen_addr,
        admin = %cfg.metrics_addr,
        upstream = %cfg.upstream.url,
        storage = %cfg.storage.path.display(),
        database = hosting.database_name(),
        replica = hosting.replica_id(),
        persist_mode = ?cfg.persist.mode,
        "permaproxy starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingSignals {
            drain: cfg.shutdown_drain,
        }),
    });
    engine.block_on(hosting.shutdown());
    Ok(())
}

/// Set-ups that work but deserve a line in the log.
fn warn_about_setup(cfg: &Config) {
    if cfg.storage.backend == crate::config::StorageBackend::S3
        && cfg.database.url.starts_with("sqlite:")
    {
        tracing::warn!("S3 storage with the embedded SQLite database: run one replica only; several replicas on one bucket need PERMAPROXY_DATABASE_URL=postgres://…");
    }
    if !cfg.user_id.has_trusted_source() {
        tracing::warn!(
            sources = %cfg.user_id.describe_sources(),
            "IMAGE_USER_ID_FROM names no trusted source (response-header: or jwt:): every id is a client's claim, so IMAGE_PER_USER_LIMIT evicts nothing and only retention and the disk bound what is stored"
        );
    }
    if cfg.persist.mode == crate::config::PersistMode::OnFirstHit
        && cfg.persist.first_hit_deadline.is_none()
    {
        tracing::warn!("IMAGE_PERSIST_MODE=on_first_hit with IMAGE_FIRST_HIT_DEADLINE_SECS=0: an image nobody requests before its source expires is lost");
    }
    if cfg.serve_rate.forwarded == crate::forwarded::ForwardedFor::Leftmost {
        tracing::warn!("TRUST_FORWARDED_FOR=true without TRUSTED_PROXIES: the client is the leftmost X-Forwarded-For address, which the client writes itself, so anyone can rotate it to escape the per-client rate limit; set TRUSTED_PROXIES to the proxies in front (behind Railway's edge: private)");
    }
    // The access log is written in batches: the last one must not be lost.
    crate::logging::flush();
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
        // Downloads handed out before the last stop, without waiting for
        // anyone to ask: this replica's own leases and any abandoned ones.
        let recovered = h.take_over_pending(true).await;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "downloading images handed out before the last stop"
            );
        }
        h.sweep_deleted_objects().await;
        if h.cfg().cdn.purging() {
            h.release_own_purges().await;
            // Its own task: a slow provider must not hold up the rest.
            let (h, mut stop) = (h.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut tick = later_interval(PURGE_EVERY);
                loop {
                    tokio::select! {
                        _ = tick.tick() => h.send_purges().await,
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let lease = h.cfg().persist.lease;
        let mut cleanup = tokio::time::interval(h.cfg().lifecycle.cleanup_interval);
        let mut flush_tick = later_interval(FLUSH_EVERY);
        // Leases last half of IMAGE_PENDING_LEASE_SECS and are renewed (and
        // abandoned rows claimed) every sixth of it, so a dead replica's
        // downloads are taken over with a third of it left to finish them.
        let mut lease_tick = later_interval(lease / 6);
        let mut housekeeping = later_interval(HOUSEKEEPING_EVERY);
        let revalidate = h.cfg().storage.cache_revalidate;
        let mut revalidate_tick = later_interval(revalidate.max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = lease_tick.tick() => {
                    h.renew_leases().await;
                    h.take_over_pending(false).await;
                }
                _ = revalidate_tick.tick(), if !revalidate.is_zero() => {
                    h.drop_deleted_from_memory().await;
                }
                _ = cleanup.tick() => {
                    match h.cleanup(false).await {
                        Ok(r) if !r.deleted.is_empty() => tracing::info!(deleted = r.deleted.len(), "cleanup finished"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cleanup failed; it runs again at the next interval"),
                    }
                }
                _ = flush_tick.tick() => h.flush_hits().await,
                _ = housekeeping.tick() => {
                    h.retry_import().await;
                    h.publish_gauges().await;
                    h.sweep_deleted_objects().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
