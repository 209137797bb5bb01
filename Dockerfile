# permaproxy container image.
#
#   docker build -t permaproxy .
#   docker run --rm -p 8080:8080 \
#     -e UPSTREAM_URL=http://studio-api:3000 \
#     -v permaproxy-images:/data/images \
#     permaproxy
#
# Three stages:
#   planner  turns the source tree into a "skeleton": the manifests plus an
#            empty stub for every .rs file. Its output only changes when
#            Cargo.toml / Cargo.lock change or .rs files are added/removed,
#            so the dependency layer below stays cached across ordinary edits.
#   builder  compiles the dependencies against the skeleton, then the real crate.
#   runtime  debian:bookworm-slim with ca-certificates and the binary, non-root.
#
# BuildKit cache mounts are deliberately not used: Railway only accepts them
# with a service-specific id (`id=s/<service id>-<path>`), which would tie this
# file to one Railway service and break plain `docker build`.

############################
# planner
############################
FROM rust:1-bookworm AS planner
WORKDIR /src
COPY . .
# Copy manifests, lockfile and toolchain/cargo config verbatim; turn every .rs
# file into a stub (empty lib.rs, `fn main() {}` elsewhere) so targets declared
# in Cargo.toml (bins, benches, tests, build.rs) still resolve.
RUN set -eu; \
    mkdir -p /skeleton; \
    find . \( -name target -o -name .git \) -prune -o -type f \
         \( -name Cargo.toml -o -name Cargo.lock -o -name 'rust-toolchain*' -o -path './.cargo/config*' \) -print \
    | while IFS= read -r f; do \
        mkdir -p "/skeleton/$(dirname "$f")"; cp "$f" "/skeleton/$f"; \
      done; \
    find . \( -name target -o -name .git \) -prune -o -type f -name '*.rs' -print \
    | while IFS= read -r f; do \
        mkdir -p "/skeleton/$(dirname "$f")"; \
        case "$f" in \
          */lib.rs) : > "/skeleton/$f" ;; \
          *) echo 'fn main() {}' > "/skeleton/$f" ;; \
        esac; \
      done

############################
# builder
############################
FROM rust:1-bookworm AS builder
# cmake: libz-ng-sys (pulled in by Pingora) builds zlib-ng from source.
# nasm: rav1e's x86 assembly (AVIF encoding for variants). Nothing new is
# needed at run time: libwebp and rav1e are linked statically.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# 1. Dependencies only (cached until the skeleton changes).
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked

# 2. The real sources. COPY keeps the build context's mtimes, which can be
#    older than the stub build above; touch them so cargo cannot mistake the
#    stub artifacts for fresh ones.
COPY . .
RUN find . -path ./target -prune -o -type f -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/permaproxy /out/permaproxy

############################
# runtime
############################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to Replicate's CDN and any https upstream.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 permaproxy \
 && useradd --system --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin permaproxy \
 && mkdir -p /data/images \
 && chown -R 10001:10001 /data

COPY --from=builder /out/permaproxy /usr/local/bin/permaproxy

# LISTEN_ADDR is not set here on purpose: the binary defaults it to
# 0.0.0.0:$PORT (Railway injects PORT) and falls back to 0.0.0.0:8080.
# The admin listener (/healthz /readyz /metrics /admin/...) stays on loopback:
# on Railway it must never be reachable from the public domain. To scrape it
# from a Prometheus service over Railway's private network, set
# METRICS_ADDR=[::]:9090 on the service (and set ADMIN_TOKEN).
ENV IMAGE_STORAGE_PATH=/data/images \
    METRICS_ADDR=127.0.0.1:9090 \
    LOG_FORMAT=json

# Persistent storage for /data/images:
#  - plain Docker / Compose: mount a named volume there
#    (`-v permaproxy-images:/data/images`); a fresh named volume inherits the
#    10001:10001 ownership of the directory created above.
#  - Railway: attach a Railway volume at /data/images (see railway.toml).
#    There is intentionally no volume declaration in this file: Railway's
#    builder rejects Dockerfiles that declare one and asks for Railway Volumes
#    instead.
#    Railway mounts volumes owned by root, so this non-root image cannot write
#    to it unless the service sets RAILWAY_RUN_UID=0 (Railway's documented fix).

# No HEALTHCHECK: the slim image has no curl/wget to run one, and the admin
# /healthz only listens on 127.0.0.1. Railway has its own HTTP check instead
# (railway.toml: healthcheckPath), which calls GET /__permaproxy/healthz on the
# PUBLIC port ($PORT); the proxy answers that path itself instead of
# forwarding it to the upstream.

USER 10001:10001
EXPOSE 8080

# SIGTERM = graceful shutdown (SHUTDOWN_GRACE_SECS); SIGINT = fast stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/permaproxy"]
CMD ["serve"]
