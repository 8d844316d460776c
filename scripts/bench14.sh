#!/usr/bin/env bash
# bench14.sh: the measurement campaign of issue 14, reproducible on a
# PostgreSQL cluster of its own.
#
# It starts a throw-away PostgreSQL cluster (initdb as user postgres in a
# temporary directory, a random free port, fsync=on, synchronous_commit=on,
# shared_preload_libraries=pg_stat_statements, max_connections=400), then
#   1. calibrates the host with pgbench: 64 clients, -j 2, one single-row
#      INSERT per transaction into a scratch table, -T 30 (once per round);
#   2. runs every configuration RUNS times (default 3), rounds interleaved
#      (round 1 of every configuration, then round 2, ...), each on a fresh
#      schema (PostgreSQL) or a fresh file (SQLite); before every
#      PostgreSQL run pg_stat_statements is reset, after it the script
#      records sum(calls) / executions and the top statements by calls;
#   3. writes OUT/runs.jsonl (one JSON line per run: configuration, round,
#      the `millrace bench flows --json` result, the statement counts),
#      OUT/summary.md (medians, ratios to pgbench) and the raw outputs.
#
# Configurations (see ONLY): e2e-{pg,sqlite} (5,000 executions, 64
# submitters), drain-{pg,sqlite} (100,000 pre-submitted, then the workers),
# backlog-{pg,sqlite}-{1k,100k} and backlog-pg-1m (executions already stored
# with --prefill, then 5,000 submitted), servers2-pg (two API servers on one
# database), workers1-pg and workers4-pg, latency-{pg,sqlite} (200/s),
# chain10-{pg,sqlite} (10-step chain); bytes per execution comes with every
# run. Worker RSS with 100 in flight: scripts/memory-soak.sh (SOAK=1, needs a
# NATS server at NATS_URL).
#
# Usage: scripts/bench14.sh              # the whole campaign
#        QUICK=1 scripts/bench14.sh      # a smoke version: small counts, one round, pgbench -T 5
# Environment:
#   MILLRACE=path   the binary to measure (default: go build ./cmd/millrace from this tree)
#   OUT=dir         where results go (default: a new /tmp/bench14.* directory)
#   RUNS=n          rounds (default 3; QUICK=1: 1)
#   ONLY=a,b        run only these configurations (names above), plus pgbench
#   PGBENCH_SECONDS pgbench duration (default 30; QUICK=1: 5)
#   E2E DRAIN BK1 BK2 BK3 LAT CHAIN TIMEOUT  executions per configuration (defaults
#                   5000 100000 1000 100000 1000000 2000 1000 30m; QUICK=1: 300 500 100 1000 5000 100 50 5m)
#   SOAK=1          also run scripts/memory-soak.sh on this cluster (worker and server RSS)
# Needs: PostgreSQL 15 server binaries (initdb, pg_ctl, pgbench, psql), jq, python3, runuser; run as root or postgres.
# Durations on the 2-core machine: QUICK=1 about 2 minutes; the whole
# campaign about 60-90 minutes when the host is quiet (a 100,000-execution
# prefill took about 1 minute on a busy host, so the three 1,000,000 ones
# are 15-30 minutes of it; each drain of 100,000 is 2-3 minutes at today's
# rates), several hours when other work shares the two cores.
set -euo pipefail

QUICK=${QUICK:-0}
RUNS=${RUNS:-3}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-30}
if [ "$QUICK" = 1 ]; then
  RUNS=${RUNS_QUICK:-1}
  PGBENCH_SECONDS=${PGBENCH_SECONDS_QUICK:-5}
fi
ONLY=${ONLY:-}
OUT=${OUT:-$(mktemp -d /tmp/bench14.XXXXXX)}
mkdir -p "$OUT/raw"
here=$(cd "$(dirname "$0")/.." && pwd)

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
for b in initdb pg_ctl pgbench psql; do
  [ -x "$PGBIN/$b" ] || { echo "bench14: $PGBIN/$b not found; install PostgreSQL's server binaries or set PGBIN" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "bench14: jq not found" >&2; exit 2; }

WORK=$(mktemp -d /tmp/bench14-pg.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/data
cleanup() {
  set +e
  if [ -f "$PGDATA/postmaster.pid" ]; then
    asuser "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# initdb refuses to run as root: the cluster belongs to postgres.
asuser() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

MR=${MILLRACE:-}
if [ -z "$MR" ]; then
  MR=$WORK/millrace
  (cd "$here" && go build -o "$MR" ./cmd/millrace)
fi
chmod 755 "$MR" 2>/dev/null || true

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "bench14: no free port found" >&2; exit 2
}
PORT=$(free_port)

asuser "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 >"$OUT/raw/initdb.log"
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$WORK'
max_connections = 400
fsync = on
synchronous_commit = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.max = 10000
pg_stat_statements.track = top
shared_buffers = 1GB
max_wal_size = 8GB
EOF
asuser "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg.log" -w start >/dev/null
PG="postgres://postgres@127.0.0.1:$PORT/bench?sslmode=disable"
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench"
psql_ -d bench -c "CREATE EXTENSION pg_stat_statements"
PGVER=$(psql_ -d bench -Atc "SHOW server_version")

{
  echo "commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$here" diff --quiet 2>/dev/null || echo ' (modified)')"
  echo "binary: $MR ($("$MR" version 2>/dev/null | head -1))"
  echo "date: $(date -u +%FT%TZ)  host: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "postgres: $PGVER on 127.0.0.1:$PORT (fsync=on, synchronous_commit=on, pg_stat_statements), QUICK=$QUICK RUNS=$RUNS"
} | tee "$OUT/env.txt"

JSONL=$OUT/runs.jsonl
: >"$JSONL"

pgbench_run() {
  local round=$1
  psql_ -d bench -c "DROP TABLE IF EXISTS scratch; CREATE TABLE scratch (id bigserial PRIMARY KEY, v integer NOT NULL, at timestamptz NOT NULL DEFAULT now())"
  echo 'INSERT INTO scratch (v) VALUES (1);' >"$WORK/insert.sql"
  chmod 644 "$WORK/insert.sql"
  "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -n -c 64 -j 2 -T "$PGBENCH_SECONDS" -f "$WORK/insert.sql" bench \
    >"$OUT/raw/pgbench.$round.txt" 2>&1
  local tps
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/raw/pgbench.$round.txt")
  echo "pgbench round $round: ${tps:-no} tps"
  # No figure (too short a run for 64 connections on a busy host) is null.
  jq -cn --argjson tps "${tps:-null}" --argjson round "$round" '{config:"pgbench", round:$round, tps:$tps}' >>"$JSONL"
}

# Executions per configuration; QUICK=1 shrinks them to a smoke test.
# Each can be set in the environment (E2E=... DRAIN=...).
if [ "$QUICK" = 1 ]; then
  d=(300 500 100 1000 5000 100 50 5m)
else
  d=(5000 100000 1000 100000 1000000 2000 1000 30m)
fi
E2E=${E2E:-${d[0]}} DRAIN=${DRAIN:-${d[1]}} BK1=${BK1:-${d[2]}} BK2=${BK2:-${d[3]}} BK3=${BK3:-${d[4]}}
LAT=${LAT:-${d[5]}} CHAIN=${CHAIN:-${d[6]}} TIMEOUT=${TIMEOUT:-${d[7]}}
k() { awk -v n="$1" 'BEGIN{ if (n>=1000000 && n%1000000==0) print n/1000000 "m"; else if (n>=1000 && n%1000==0) print n/1000 "k"; else print n }'; }

# name|store|flags
CONFIGS=(
  "e2e-pg|pg|--executions $E2E --concurrency 64"
  "e2e-sqlite|sqlite|--executions $E2E --concurrency 64"
  "drain-pg|pg|--drain --executions $DRAIN --concurrency 64"
  "drain-sqlite|sqlite|--drain --executions $DRAIN --concurrency 64"
  "backlog-pg-$(k $BK1)|pg|--prefill $BK1 --executions $E2E --concurrency 64"
  "backlog-pg-$(k $BK2)|pg|--prefill $BK2 --executions $E2E --concurrency 64"
  "backlog-pg-$(k $BK3)|pg|--prefill $BK3 --executions $E2E --concurrency 64"
  "backlog-sqlite-$(k $BK1)|sqlite|--prefill $BK1 --executions $E2E --concurrency 64"
  "backlog-sqlite-$(k $BK2)|sqlite|--prefill $BK2 --executions $E2E --concurrency 64"
  "servers2-pg|pg|--servers 2 --executions $E2E --concurrency 64"
  "workers1-pg|pg|--workers 1 --executions $E2E --concurrency 64"
  "workers4-pg|pg|--workers 4 --executions $E2E --concurrency 64"
  "latency-pg|pg|--rate 200 --executions $LAT"
  "latency-sqlite|sqlite|--rate 200 --executions $LAT"
  "chain10-pg|pg|--steps 10 --executions $CHAIN --concurrency 64"
  "chain10-sqlite|sqlite|--steps 10 --executions $CHAIN --concurrency 64"
)

selected() {
  [ -z "$ONLY" ] && return 0
  case ",$ONLY," in *",$1,"*) return 0 ;; esac
  return 1
}

bench_run() {
  local name=$1 kind=$2 flags=$3 round=$4 store raw="$OUT/raw/$name.$round"
  if [ "$kind" = pg ]; then
    store=$PG
    psql_ -d bench -Atc "SELECT pg_stat_statements_reset()" >/dev/null
  else
    store="sqlite:$WORK/$name.$round.db"
  fi
  local rc=0
  # shellcheck disable=SC2086 # flags are words
  "$MR" bench flows --store "$store" $flags --timeout "$TIMEOUT" --json >"$raw.json" 2>"$raw.err" || rc=$?
  rm -f "$WORK/$name.$round.db"*
  local stmts=null
  if [ "$kind" = pg ]; then
    stmts=$(psql_ -d bench -Atc "SELECT coalesce(sum(calls),0) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')")
    psql_ -d bench -c "SELECT calls, rows, round(total_exec_time::numeric, 1) AS ms, left(regexp_replace(query, '\s+', ' ', 'g'), 160) AS query
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'bench')
      ORDER BY calls DESC LIMIT 25" >"$raw.top.txt"
  fi
  if ! jq -e . "$raw.json" >/dev/null 2>&1; then
    echo "{}" >"$raw.json"
  fi
  jq -c --arg name "$name" --arg kind "$kind" --arg flags "$flags" --argjson round "$round" --argjson rc "$rc" --argjson stmts "$stmts" \
    '{config:$name, store:$kind, flags:$flags, round:$round, exit:$rc,
      pg_statements_total:$stmts,
      pg_statements_per_execution:(if $stmts == null or (.executions // 0) == 0 then null else ($stmts / .executions) end),
      result:.}' "$raw.json" >>"$JSONL"
  jq -r --arg name "$name" --argjson round "$round" --argjson rc "$rc" \
    '"\($name) round \($round): exit \($rc), \(.executions_per_second // 0 | floor) executions/s, submit \(.submit_rate // 0 | floor)/s" +
     (if .drain_per_second then ", drain \(.drain_per_second|floor)/s" else "" end) +
     (if .statements then ", \(.statements.per_execution*10|floor/10) statements/execution" else "" end) +
     (if .storage then ", \(.storage.bytes_per_execution|floor) bytes/execution" else "" end)' "$raw.json"
}

start=$(date +%s)
for round in $(seq 1 "$RUNS"); do
  pgbench_run "$round"
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r name kind flags <<<"$c"
    selected "$name" || continue
    bench_run "$name" "$kind" "$flags" "$round"
  done
done

if [ "${SOAK:-0}" = 1 ]; then
  psql_ -d postgres -c "CREATE DATABASE soak" >/dev/null
  OUT="$OUT/soak" MILLRACE="$MR" PGURL="postgres://postgres@127.0.0.1:$PORT/soak?sslmode=disable" \
    "$here/scripts/memory-soak.sh" 200 "$([ "$QUICK" = 1 ] && echo 2000 || echo 6000)" | tee "$OUT/raw/soak.txt"
fi

python3 - "$JSONL" "$OUT/env.txt" >"$OUT/summary.md" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
env = open(sys.argv[2]).read().strip()
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
tps = med([r["tps"] for r in runs if r["config"] == "pgbench"])
print("# bench14 campaign\n")
print("```text\n" + env + "\n```\n")
print(f"pgbench (64 clients, one single-row INSERT per transaction): runs {', '.join(str(round(r['tps'])) if r['tps'] else '-' for r in runs if r['config']=='pgbench')} tps, median **{round(tps) if tps else '-'}**\n")
print("| configuration | flags | executions/s (runs) | median | ratio to pgbench | submit/s | drain/s | cpu ms/exec | statements/exec (window; script) | bytes/exec | not completed |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
order = []
for r in runs:
    if r["config"] != "pgbench" and r["config"] not in order:
        order.append(r["config"])
def fmt(x, nd=0):
    if x is None: return "-"
    return f"{x:,.{nd}f}"
for name in order:
    rs = [r for r in runs if r["config"] == name]
    res = [r["result"] for r in rs]
    eps = [x.get("executions_per_second") for x in res]
    m = med(eps)
    drain = med([x.get("drain_per_second") for x in res])
    rate_for_ratio = drain if drain else m
    st_w = med([(x.get("statements") or {}).get("per_execution") for x in res])
    st_s = med([r.get("pg_statements_per_execution") for r in rs])
    by = med([(x.get("storage") or {}).get("bytes_per_execution") for x in res])
    inc = sum((x.get("incomplete") or 0) for x in res) + sum(1 for r in rs if r.get("exit"))
    print(f"| {name} | `{rs[0]['flags']}` | {', '.join(fmt(e) for e in eps)} | **{fmt(m)}** | {fmt(rate_for_ratio/tps, 3) if (tps and rate_for_ratio) else '-'} | "
          f"{fmt(med([x.get('submit_rate') for x in res]))} | {fmt(drain)} | {fmt(med([x.get('cpu_ms_per_execution') for x in res]), 3)} | "
          f"{fmt(st_w, 1)}; {fmt(st_s, 1)} | {fmt(by)} | {inc} |")
lat = [n for n in order if n.startswith("latency")]
if lat:
    print("\n| latency run | submit→start p50 / p90 / p99 ms (medians) | submit→complete p50 / p99 ms |")
    print("|---|---|---|")
    for name in lat:
        res = [r["result"] for r in runs if r["config"] == name]
        s = lambda k, q: fmt(med([(x.get(k) or {}).get(q) for x in res]), 2)
        print(f"| {name} | {s('submit_to_start','p50_ms')} / {s('submit_to_start','p90_ms')} / {s('submit_to_start','p99_ms')} | {s('submit_to_complete','p50_ms')} / {s('submit_to_complete','p99_ms')} |")
print("\nStatements per execution: 'window' is what `bench flows` counted itself between its first submit and its last completion (pg_stat_statements calls in the database, before and after); 'script' is the script's sum(calls) since the reset before the run, divided by the executions submitted (it also counts the schema's migrations, the token and playbook set-up, any prefill and the latency sample's event reads).")
PY
echo "bench14: done in $(( $(date +%s) - start )) s; results in $OUT (summary.md, runs.jsonl, raw/)"
cat "$OUT/summary.md"
