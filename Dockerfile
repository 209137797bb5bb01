# permaproxy container image.
#
#   docker build -t permaproxy .
#   docker run --rm -p 8080:8080 \
#     -e UPSTREAM_URL=http://studio-api:3000 \
#     -v permaproxy-images:/data/images \
#     permaproxy
#
# Three stages:
#   planner  makes a "skeleton" of the source tree: the manifests, the lockfile,
#            vendor/ whole (pingora-core and pingora-proxy are patched path
#            dependencies: they must be real for anything to build) and an
#            empty stub for every other .rs file. It only changes when
#            Cargo.toml / Cargo.lock / vendor/ change or .rs files are
#            added/removed, so the dependency layer below stays cached across
#            ordinary edits.
#   builder  compiles the dependencies against the skeleton, then the real crate.
#   runtime  debian:bookworm-slim with ca-certificates and the binary, non-root.
#
# The Rust image is pinned to the version CI builds and tests with; Cargo.toml's
# rust-version says the same. scripts/container.sh builds and runs this file.
#
# BuildKit cache mounts are deliberately not used: Railway only accepts them
# with a service-specific id (`id=s/<service id>-<path>`), which would tie this
# file to one Railway service and break plain `docker build`.

############################
# planner
############################
FROM rust:1.95-bookworm AS planner
WORKDIR /src
COPY . .
# Manifests, lockfile and toolchain/cargo config verbatim, vendor/ whole; every
# other .rs file becomes a stub (empty lib.rs, `fn main() {}` elsewhere) so
# targets declared in Cargo.toml (bins, benches, tests) still resolve.
RUN set -eu; \
    mkdir -p /skeleton; \
    cp -a vendor /skeleton/vendor; \
    find . \( -name target -o -name .git -o -path ./vendor \) -prune -o -type f \
         \( -name Cargo.toml -o -name Cargo.lock -o -name 'rust-toolchain*' -o -path './.cargo/config*' \) -print \
    | while IFS= read -r f; do \
        mkdir -p "/skeleton/$(dirname "$f")"; cp "$f" "/skeleton/$f"; \
      done; \
    find . \( -name target -o -name .git -o -path ./vendor \) -prune -o -type f -name '*.rs' -print \
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
FROM rust:1.95-bookworm AS builder
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
#    older than the stub build above; touch the crate's own files so cargo
#    cannot mistake the stub artifacts for fresh ones. vendor/ is left alone:
#    it was built for real above, and touching it would rebuild Pingora.
COPY . .
RUN find . \( -path ./target -o -path ./vendor \) -prune -o -type f -name '*.rs' -exec touch {} + \
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

# The health check asks the public listener (/__permaproxy/healthz on
# 127.0.0.1:$PORT, or LISTEN_ADDR's port) from inside the container: the slim
# image has no curl, so the binary asks itself. It answers 503 once a SIGTERM
# has started the drain. Railway ignores HEALTHCHECK and calls the same path
# itself (railway.toml: healthcheckPath).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/permaproxy", "health"]

USER 10001:10001
EXPOSE 8080

# Stopping. SIGTERM is graceful: SHUTDOWN_DRAIN_SECS of drain (/readyz and the
# health path answer 503, listeners still accept), then up to
# SHUTDOWN_GRACE_SECS for the requests in flight; the process exits as soon as
# they are done. SIGINT is a fast stop. The orchestrator's kill timer always
# wins: `docker stop` sends SIGKILL 10 s after SIGTERM unless told otherwise
# (--stop-timeout / compose's stop_grace_period; Railway's drainingSeconds,
# 15 in railway.toml). The image therefore sets a grace of 8 s, so drain 0 +
# grace 8 + the exit itself fit inside docker's default 10 s. Raise the timer
# before raising either setting: it must be at least drain + grace + 2 s.
ENV SHUTDOWN_DRAIN_SECS=0 \
    SHUTDOWN_GRACE_SECS=8
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/permaproxy"]
CMD ["serve"]
