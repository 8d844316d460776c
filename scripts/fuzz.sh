#!/usr/bin/env bash
# fuzz.sh: run every fuzz target of the module for a bounded time each.
#
#   FUZZTIME=30s scripts/fuzz.sh            # all targets, 30 s each
#   FUZZTIME=5s  scripts/fuzz.sh server     # targets of packages matching "server"
#
# `go test ./...` already runs every target's seed corpus (f.Add and
# testdata/fuzz/<Target>/) as a plain test; this script mutates beyond it.
# A finding is written by Go to <package>/testdata/fuzz/<Target>/<hash>:
# fix the bug and commit that file, which then runs in every `go test`.
# CI (.ci/run) runs it with FUZZTIME=5s.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
filter="${1:-}"
targets=$(grep -rl --include='*_test.go' '^func Fuzz' internal cmd 2>/dev/null | sort | while read -r f; do
  pkg="./$(dirname "$f")"
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func ||; s|^|$pkg |"
done)
fail=0 n=0 start=$(date +%s)
while read -r pkg target; do
  [ -n "$pkg" ] || continue
  [[ -z "$filter" || "$pkg" == *"$filter"* ]] || continue
  n=$((n + 1))
  t0=$(date +%s)
  if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 </dev/null); then
    execs=$(printf '%s\n' "$out" | grep -o 'execs: [0-9]*' | tail -1 | cut -d' ' -f2 || true)
    printf 'ok    %-45s %-32s %6ss %10s execs\n' "$pkg" "$target" "$(( $(date +%s) - t0 ))" "${execs:-?}"
  else
    fail=$((fail + 1))
    printf 'FAIL  %-45s %s\n' "$pkg" "$target"
    printf '%s\n' "$out" | tail -40
  fi
done <<< "$targets"
echo "fuzz: $n targets, $fail failed, $(( $(date +%s) - start ))s (FUZZTIME=$fuzztime)"
[ "$fail" -eq 0 ]
