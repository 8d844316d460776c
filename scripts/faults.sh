#!/usr/bin/env bash
# faults.sh: the fault matrix of docs/reliability.md at full size.
#
#   scripts/faults.sh                      # every fault, 10,000 executions each
#   MILLRACE_FAULTS=worker-kill,nats-down scripts/faults.sh
#   MILLRACE_FAULT_EXECUTIONS=2000 scripts/faults.sh
#
# Needs PostgreSQL at $MILLRACE_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test?sslmode=disable); the pg-restart
# fault also needs /usr/lib/postgresql/15/bin (it runs its own cluster).
# Faults run one at a time (-parallel 1) so each has the machine to itself
# and its duration means something. Prints one row per fault; the full log
# is kept in $LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
export MILLRACE_FAULT_EXECUTIONS="${MILLRACE_FAULT_EXECUTIONS:-10000}"
export MILLRACE_FAULT_NATS_DOWN_SECONDS="${MILLRACE_FAULT_NATS_DOWN_SECONDS:-20}"
LOG="${LOG:-$(mktemp -t millrace-faults.XXXXXX.log)}"
echo "fault matrix: ${MILLRACE_FAULT_EXECUTIONS} executions per fault, faults: ${MILLRACE_FAULTS:-all}; log: $LOG" >&2
set +e
go test -count=1 -parallel 1 -timeout 2h -run 'TestFaultMatrix' -v ./internal/faults >"$LOG" 2>&1
rc=$?
set -e
printf '%-14s %10s %6s %8s %14s %10s %10s %14s\n' fault executions lost doubled extra_children violations duration slowest_submit
grep -o 'faultrow .*' "$LOG" | while read -r _ fields; do
  declare -A f=()
  for kv in $fields; do f[${kv%%=*}]=${kv#*=}; done
  printf '%-14s %10s %6s %8s %14s %10s %10s %14s\n' "${f[fault]}" "${f[executions]}" "${f[lost]}" "${f[doubled]}" "${f[extra_children]}" "${f[violations]}" "${f[duration]}" "${f[slowest_submit]:-}"
done
grep -E '^(--- FAIL|FAIL|ok )' "$LOG" || true
if [ "$rc" -ne 0 ]; then echo "the matrix failed (exit $rc): see $LOG" >&2; fi
exit "$rc"
