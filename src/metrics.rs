//! Prometheus metrics. The names are an interface that dashboards and alert
//! rules depend on: README documents each one; do not rename them.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub hosted_requests: IntCounterVec,
    pub hosted_bytes_sent: IntCounter,
    pub downloads: IntCounterVec,
    pub download_duration: Histogram,
    pub downloaded_bytes: IntCounter,
    pub pending_downloads: IntGauge,
    pub failed_downloads: IntGauge,
    pub stored_images: IntGauge,
    pub stored_bytes: IntGauge,
    pub memory_cache_bytes: IntGauge,
    pub memory_cache_entries: IntGauge,
    pub rate_limited: IntCounter,
    pub upstream_errors: IntCounter,
    pub rewritten_urls: IntCounterVec,
    pub storage_errors: IntCounterVec,
    pub storage_free_bytes: IntGauge,
    pub cleanup_deleted: IntCounterVec,
    pub user_id_missing: IntCounter,
    pub rewrite_failures: IntCounterVec,
    pub webhooks: IntCounterVec,
    pub webhook_anonymous: IntCounter,
    pub variants: IntCounterVec,
    pub transcode_duration: Histogram,
    pub transcodes_in_flight: IntGauge,
    pub cdn_purges: IntCounterVec,
    pub cdn_purge_queue: IntGauge,
    pub cdn_purge_oldest_seconds: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The `route` label values documented in README.
const ROUTES: [&str; 4] = ["hosted", "rewrite", "passthrough", "webhook"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    // Registration only fails on a duplicate or malformed name, which is a
    // programming error caught by the first test that touches metrics.
    fn new() -> Metrics {
        let r = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "permaproxy_http_request_duration_seconds",
                "Time from request to the end of the response, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(http_duration.clone()))
            .expect("unique metric");
        let download_duration = Histogram::with_opts(
            HistogramOpts::new(
                "permaproxy_download_duration_seconds",
                "Time to download and store one image from its source, retries included",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(download_duration.clone()))
            .expect("unique metric");
        // A transcode takes milliseconds (a 256 px WebP) to seconds (a
        // large AVIF): the buckets reach past the request buckets' end.
        let transcode_duration = Histogram::with_opts(
            HistogramOpts::new(
                "permaproxy_transcode_duration_seconds",
                "Time one transcode took on the pool: a variant, or an image converted as it is stored",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(transcode_duration.clone()))
            .expect("unique metric");
        let m = Metrics {
            http_requests: counter_vec(&r, "permaproxy_http_requests_total", "Requests by route (hosted, rewrite, passthrough, health) and status class", &["route", "status"]),
            http_duration,
            hosted_requests: counter_vec(&r, "permaproxy_hosted_requests_total", "Hosted-image requests by where they were answered from (memory, disk, pending, miss)", &["tier"]),
            hosted_bytes_sent: counter(&r, "permaproxy_hosted_bytes_sent_total", "Body bytes sent for hosted images"),
            downloads: counter_vec(&r, "permaproxy_downloads_total", "Source download attempts by outcome (ok, retry, failed, rejected)", &["outcome"]),
            download_duration,
            downloaded_bytes: counter(&r, "permaproxy_downloaded_bytes_total", "Image bytes downloaded from sources and stored"),
            pending_downloads: gauge(&r, "permaproxy_pending_downloads", "Hosted URLs handed out whose bytes are not stored yet"),
            failed_downloads: gauge(&r, "permaproxy_failed_downloads", "Hosted URLs whose download failed for good and that are still remembered"),
            stored_images: gauge(&r, "permaproxy_stored_images", "Images in the store"),
            stored_bytes: gauge(&r, "permaproxy_stored_bytes", "Bytes of images in the store"),
            memory_cache_bytes: gauge(&r, "permaproxy_memory_cache_bytes", "Bytes held by the memory cache"),
            memory_cache_entries: gauge(&r, "permaproxy_memory_cache_entries", "Images held by the memory cache"),
            rate_limited: counter(&r, "permaproxy_rate_limited_total", "Hosted-image requests refused with 429"),
            upstream_errors: counter(&r, "permaproxy_upstream_errors_total", "Requests that could not reach the upstream"),
            rewritten_urls: counter_vec(&r, "permaproxy_rewritten_urls_total", "Source URLs in responses, by result (hosted, kept)", &["result"]),
            storage_errors: counter_vec(&r, "permaproxy_storage_errors_total", "Storage failures by kind (full, io, database)", &["kind"]),
            storage_free_bytes: gauge(&r, "permaproxy_storage_free_bytes", "Free bytes on the storage volume"),
            cleanup_deleted: counter_vec(&r, "permaproxy_cleanup_deleted_total", "Images deleted by lifecycle rules, by reason", &["reason"]),
            user_id_missing: counter(&r, "permaproxy_user_id_missing_total", "Rewrite responses left unhosted because no trusted user id was found"),
            webhooks: counter_vec(&r, "permaproxy_webhooks_total", "Replicate webhooks on capture routes, by outcome (captured, unverified, rejected, duplicate)", &["outcome"]),
            webhook_anonymous: counter(&r, "permaproxy_webhook_anonymous_total", "Captured webhooks whose user was neither learned from the prediction nor given in the URL"),
            rewrite_failures: counter_vec(&r, "permaproxy_rewrite_failures_total", "Rewrite-route responses sent unchanged because the rewrite failed, by reason (decode, not_json, panic, injected)", &["reason"]),
            variants: counter_vec(&r, "permaproxy_variants_total", "Variant requests by outcome: made (a variant transcoded and stored, once however many requests waited), hit (answered from a stored variant), original (answered with the image itself), rejected (400, 422 or 503)", &["outcome"]),
            transcode_duration,
            transcodes_in_flight: gauge(&r, "permaproxy_transcodes_in_flight", "Variant makes admitted: running or waiting for a transcode slot (at most IMAGE_TRANSCODE_CONCURRENCY + IMAGE_TRANSCODE_QUEUE)"),
            cdn_purges: counter_vec(&r, "permaproxy_cdn_purges_total", "CDN purge tags by provider and outcome: sent (the provider took them), retried (an error or timeout; tried again with backoff), rate_limited (429; tried again after Retry-After)", &["provider", "outcome"]),
            cdn_purge_queue: gauge(&r, "permaproxy_cdn_purge_queue", "CDN purges owed and not yet taken by the provider (database-wide)"),
            cdn_purge_oldest_seconds: gauge(&r, "permaproxy_cdn_purge_oldest_seconds", "Age of the oldest CDN purge still owed; 0 when none (database-wide)"),
            registry: r,
        };
        m.prime();
        m
    }

    /// Creates every documented label value at zero, so each series is in
    /// the first scrape: dashboards and alerts (`rate()`, `absent()`) need
    /// them before the first event, not after.
    fn prime(&self) {
        for route in ROUTES {
            for class in ["2xx", "3xx", "4xx", "5xx"] {
                self.http_requests.with_label_values(&[route, class]);
            }
            self.http_duration.with_label_values(&[route]);
        }
        for tier in ["memory", "disk", "pending", "miss"] {
            self.hosted_requests.with_label_values(&[tier]);
        }
        for outcome in ["ok", "retry", "failed", "rejected"] {
            self.downloads.with_label_values(&[outcome]);
        }
        for outcome in ["captured", "unverified", "rejected", "duplicate"] {
            self.webhooks.with_label_values(&[outcome]);
        }
        for reason in ["decode", "not_json", "panic"] {
            self.rewrite_failures.with_label_values(&[reason]);
        }
        for outcome in ["made", "hit", "original", "rejected"] {
            self.variants.with_label_values(&[outcome]);
        }
        for provider in ["cloudflare", "fastly", "bunny", "webhook"] {
            for outcome in ["sent", "retried", "rate_limited"] {
                self.cdn_purges.with_label_values(&[provider, outcome]);
            }
        }
    }
}

/// `2xx`, `4xx`...: classes keep label cardinality fixed.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

pub fn render() -> Vec<u8> {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&get().registry.gather(), &mut buf) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    buf
}
