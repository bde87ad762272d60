# Sourced by the other scripts: runs set-up (quick when everything is present) and exports the
# env file it writes, so cargo finds libtorch and the binaries find ONNX Runtime.
MAXL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
maxl_env() {
  bash "$MAXL_ROOT/scripts/setup.sh"
  local cache="${MAXL_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/maxl}"
  set -a
  # shellcheck disable=SC1091
  source "$cache/maxl.env"
  set +a
  # The binaries find the env file (and so ONNX Runtime) through it even where HOME is unset.
  export MAXL_CACHE_DIR="$cache"
  # The venv's Python first on PATH: tests call it for reference fixtures and format checks.
  export PATH="$MAXL_VENV/bin:$PATH"
  cd "$MAXL_ROOT"
}
