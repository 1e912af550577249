#!/usr/bin/env bash
# The README's test command: installs the system packages the tests need (only when missing)
# and runs the whole test suite. Works as root or through sudo on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are reused across runs and clones: a warm run takes seconds, not a cold build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"

# command → Debian package, for everything the tests start or call.
missing=()
declare -A packages=(
  [openssl]=openssl          # tests make certificates with another tool than ours
  [Xvfb]=xvfb                # the window test runs the real binary on a virtual display
  [xdotool]=xdotool          # … finds its window
  [import]=imagemagick       # … and takes a screenshot
)
# Loaded by the window at run time (eframe/glow/winit), not found by `command -v`.
for lib in libGL.so.1 libEGL.so.1 libxkbcommon-x11.so.0; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || missing+=(libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0)
done
for command in "${!packages[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${packages[$command]}")
done
# Tests start throwaway PostgreSQL clusters; Debian keeps initdb off PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 \
  || missing+=(postgresql)
# Tests stop the binary with SIGTERM through /bin/kill (procps; `command -v` finds bash's builtin).
type -P kill >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
  echo "Installing test dependencies: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 2; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  # shellcheck disable=SC2046 # word splitting dedups the list on purpose
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u)
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
