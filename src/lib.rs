//! permaproxy: a Pingora reverse proxy that makes short-lived Replicate image
//! URLs permanent.
//!
//! The layout follows the request path:
//! - [`config`]: one settings table, loaded from defaults, TOML, then env.
//! - [`proxy`]: the thin Pingora `ProxyHttp` glue that routes each request.
//! - [`rewrite`]: pure JSON scanning and URL replacement.
//! - [`sources`]: which URLs are Replicate sources, and the SSRF address policy.
//! - [`fetch`]: downloads with retries, caps and the SSRF guard.
//! - [`hosting`]: the engine, a facade over metadata, bytes, memory and downloads.
//! - [`repo`]: image metadata in SQLite or Postgres (the `hosted_images` table).
//! - [`store`]: the byte store, on disk or in an S3 bucket.
//! - [`lifecycle`]: retention, per-user limits and the disk cap.
//! - [`migrate`]: copying a disk store into a bucket.
//! - [`serve`]: hosted-image responses (ETag, Range, conditional requests).
//! - [`admin`]: the private admin listener (health, metrics, admin API, web page).
//! - [`variants`]: resized/converted image variants and metadata stripping.
//! - [`shutdown`]: SIGTERM's drain, then the grace period.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod clock;
pub mod commands;
pub mod config;
pub mod demo;
pub mod error;
pub mod fetch;
pub mod forwarded;
pub mod health;
pub mod hosting;
pub mod ids;
pub mod ignored_params;
pub mod image_format;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod migrate;
pub mod proxy;
pub mod purge;
pub mod repo;
pub mod rewrite;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod signing;
pub mod sources;
pub mod store;
pub mod userid;
pub mod variants;
pub mod webhook;
