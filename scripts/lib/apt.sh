# Sourced by the setup scripts: installs Debian packages, as root or through
# sudo, quietly unless apt fails (then its output is kept for the error).
# Usage: apt_install LABEL PACKAGE...
apt_install() {
  local label="$1"
  shift
  [ $# -gt 0 ] || return 0
  echo "$label: installing $*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends: the binaries, not a running service's extras.
  local out
  if ! out="$($sudo apt-get install -y -qq --no-install-recommends "$@" 2>&1)"; then
    echo "$out" >&2
    exit 1
  fi
}
