#!/bin/sh
# build.sh: THE build of the millrace binary. The Dockerfile runs it, and so
# does the test that CI runs in place of a Docker build
# (deploy/image/image_test.go), so the image and CI cannot build different
# binaries.
#
# Usage: scripts/build.sh OUTPUT
#   VERSION   what `millrace version` prints (default: git describe, else dev)
#
#   CGO_ENABLED=1  DuckDB (the duckdb tool, pre-aggregates) is C++ linked
#                  through cgo; without cgo it would not build.
#   -trimpath      no build machine paths in the binary or its panics.
#   -s -w          no symbol table or DWARF: a smaller image. Stack traces
#                  keep function names and lines (they come from pclntab).
set -eu
if [ "$#" -ne 1 ]; then
  echo "usage: VERSION=v1.2.3 $0 OUTPUT" >&2
  exit 2
fi
case $1 in
  /*) out=$1 ;;
  *) out=$(pwd)/$1 ;;
esac
cd "$(dirname "$0")/.."
if [ -z "${VERSION:-}" ]; then
  VERSION=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
fi
export CGO_ENABLED=1
exec go build -trimpath \
  -ldflags "-s -w -X github.com/millrace/millrace/internal/cli.version=$VERSION" \
  -o "$out" ./cmd/millrace
