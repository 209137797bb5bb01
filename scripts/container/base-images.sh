#!/usr/bin/env bash
# Makes local stand-ins for the two base images the Dockerfile names, when
# they are missing, so the repository's real Dockerfile builds on a machine
# that cannot pull from a container registry:
#
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm
#   rust:<X.Y>-bookworm   the same plus build-essential, pkg-config,
#                         ca-certificates and this machine's Rust toolchain at
#                         RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo,
#                         laid out as the official image has it
#
# Both get this machine's apt sources and the extra certificate authorities
# of /usr/local/share/ca-certificates: without them cargo inside the build
# fails with "self-signed certificate in certificate chain" behind an
# intercepting proxy. Where the real images can be pulled, nothing here runs.
#
#   scripts/container/base-images.sh     (root, or sudo; called by container.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/container/lib.sh

rust_tag="$(dockerfile_rust_tag)"
host_rust="$(rustc --version | awk '{print $2}')"
case "$rust_tag" in
  "rust:${host_rust%.*}-bookworm") ;;
  *) die "the Dockerfile builds FROM $rust_tag but this machine's toolchain is $host_rust: the stand-in would lie about its version" ;;
esac

need_slim=1 need_rust=1
"${PODMAN[@]}" image exists docker.io/library/debian:bookworm-slim && need_slim=0
"${PODMAN[@]}" image exists "docker.io/library/$rust_tag" && need_rust=0
if [ $need_slim = 0 ] && [ $need_rust = 0 ]; then
  say "base images present: debian:bookworm-slim, $rust_tag"
  exit 0
fi

work="$(mktemp -d /var/tmp/permaproxy-bases.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mirror="$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

say "debootstrap --variant=minbase bookworm from $mirror (a minute or two)"
started=$SECONDS
debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# This machine's apt sources and settings, and its extra authorities.
rm -f "$work/root/etc/apt/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && install -D -m 0644 "$f" "$work/root$f"
done
cp -a /etc/apt/apt.conf.d/. "$work/root/etc/apt/apt.conf.d/"
mkdir -p "$work/root/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$work/root/usr/local/share/ca-certificates/" 2>/dev/null || true
# As the official slim image: no package lists, no caches.
rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin

import() { # ROOTFS NAME [--change ...]
  local root="$1" name="$2"; shift 2
  tar -C "$root" --numeric-owner -c . \
    | "${PODMAN[@]}" import --quiet --change 'CMD ["bash"]' "$@" - "docker.io/library/$name" >/dev/null
}

if [ $need_slim = 1 ]; then
  import "$work/root" debian:bookworm-slim \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  say "made debian:bookworm-slim ($((SECONDS - started)) s)"
fi

if [ $need_rust = 1 ]; then
  root="$work/root"
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
  chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -euc '
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends build-essential pkg-config ca-certificates >/dev/null
    update-ca-certificates >/dev/null
    rm -rf /var/lib/apt/lists/*' \
    || die "installing the builder packages failed"
  umount "$root/proc"
  # The toolchain as rustup lays it out, under the official image's paths.
  sysroot="$(rustc --print sysroot)"
  toolchain="${host_rust}-x86_64-unknown-linux-gnu"
  mkdir -p "$root/usr/local/rustup/toolchains" "$root/usr/local/cargo/bin"
  cp -a "$sysroot/." "$root/usr/local/rustup/toolchains/$toolchain/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n\n[overrides]\n' "$toolchain" \
    >"$root/usr/local/rustup/settings.toml"
  install -m 0755 "$(command -v rustup 2>/dev/null || echo "$HOME/.cargo/bin/rustup")" \
    "$root/usr/local/cargo/bin/rustup"
  for p in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver rust-gdb rust-lldb; do
    ln -sf rustup "$root/usr/local/cargo/bin/$p"
  done
  chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo"
  import "$root" "$rust_tag" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change "ENV RUST_VERSION=$host_rust" \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  say "made $rust_tag ($((SECONDS - started)) s)"
fi
