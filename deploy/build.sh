#!/bin/sh
# Builds spanwire and stages the container's root filesystem in $1 (default
# ./out): /usr/local/bin/spanwire and /etc/spanwire/config.yaml. The
# Dockerfile runs exactly this; without Docker, run it by hand and copy the
# tree into any image (or run the binary in place).
#   SPANWIRE_BIN   a binary already built: skip `cargo build`
set -eu
out=${1:-out}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SPANWIRE_BIN:-}" ]; then
  (cd "$here/.." && cargo build --release --locked --bin spanwire)
  SPANWIRE_BIN="$here/../target/release/spanwire"
fi
mkdir -p "$out/usr/local/bin" "$out/etc/spanwire"
cp "$SPANWIRE_BIN" "$out/usr/local/bin/spanwire"
chmod 0755 "$out/usr/local/bin/spanwire"
cp "$here/config.yaml" "$out/etc/spanwire/config.yaml"
chmod 0644 "$out/etc/spanwire/config.yaml"
"$out/usr/local/bin/spanwire" validate --config "$out/etc/spanwire/config.yaml"
