#!/usr/bin/env bash
# Builds the Debian package: target/debian/gatehouse_<version>-1_<arch>.deb (under
# $CARGO_TARGET_DIR when set). A release build, then the man pages and shell completions
# generated from the clap definitions by the binary just built (into
# <target dir>/release/generated/, where the assets in Cargo.toml's [package.metadata.deb]
# look), then cargo-deb packages what is there without building again.
# Needs cargo-deb (`cargo install cargo-deb --locked`), or CARGO_DEB=path/to/cargo-deb.
# Extra arguments go to cargo-deb, e.g. --fast or --output DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb="${CARGO_DEB:-$(command -v cargo-deb || true)}"
if [ -z "$cargo_deb" ]; then
  echo "error: cargo-deb is not installed; run: cargo install cargo-deb --locked (or set CARGO_DEB)" >&2
  exit 2
fi

cargo build --release --locked
target="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
generated="$target/release/generated"
rm -rf "$generated"
"$target/release/gatehouse" generate man "$generated/man" >/dev/null
# Debian ships man pages gzipped; cargo-deb compresses only assets it didn't find in target/.
gzip -9n "$generated"/man/*.1
"$target/release/gatehouse" generate completions "$generated/completions" >/dev/null
"$cargo_deb" deb --no-build --locked "$@"
