#!/usr/bin/env bash
# memory-soak.sh: the memory figures of docs/benchmarks.md.
#
# Starts `millrace server` (PostgreSQL, a fresh schema) and one
# `millrace worker` as separate processes on an existing NATS server, then
#   1. runs `millrace bench flows --server` at RATE executions/s for
#      EXECUTIONS executions, sampling both processes' RSS every 30 s;
#   2. puts 150 executions of a slow `http` step (a local endpoint that
#      answers after 20 s) on the worker and samples its RSS while
#      millrace_worker_in_flight reads 100.
# Usage: scripts/memory-soak.sh [RATE] [EXECUTIONS]   (defaults 200 120000: ten minutes)
# Needs: a built millrace on PATH (or MILLRACE=path), python3, curl, psql.
set -euo pipefail
RATE=${1:-200}
EXECUTIONS=${2:-120000}
MR=${MILLRACE:-millrace}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
TAG=soak$RANDOM
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export DATABASE_URL="$PGURL&search_path=$TAG"
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222} NATS_STREAM=SOAK_$TAG NATS_SUBJECT=soak.$TAG NATS_CONSUMER=soak_$TAG
export NOETL_WORKER_NATS_MAX_ACK_PENDING=256 MILLRACE_ADDR=127.0.0.1:18082 SERVER_API_URL=http://127.0.0.1:18082
API=http://127.0.0.1:18082

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
hwm() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$PGURL" -qc "drop schema if exists $TAG cascade" >/dev/null 2>&1 || true
  # The stream is in memory on a shared NATS: leave no messages behind.
  "$MR" nats stream rm "$NATS_STREAM" >/dev/null 2>&1 || true
}
trap cleanup EXIT

python3 - <<'PY' &
import http.server, socketserver, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(20)
        b = b'{"ok":true}'
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True; request_queue_size = 512
S(("127.0.0.1", 18998), H).serve_forever()
PY
pids+=($!)
"$MR" server >"$OUT/server.log" 2>&1 & SP=$!; pids+=($SP)
for _ in $(seq 1 100); do curl -sf "$API/api/health" >/dev/null && break; sleep 0.2; done
MILLRACE_WORKER_METRICS_ADDR=127.0.0.1:19091 "$MR" worker >"$OUT/worker.log" 2>&1 & WP=$!; pids+=($WP)
sleep 2

echo "soak: $EXECUTIONS executions at $RATE/s; samples in $OUT/soak.txt"
echo "start server_rss_kb=$(rss $SP) worker_rss_kb=$(rss $WP)" | tee "$OUT/soak.txt"
"$MR" bench flows --server "$API" --rate "$RATE" --executions "$EXECUTIONS" --timeout 30m --json >"$OUT/bench.json" 2>"$OUT/bench.err" &
BP=$!
while kill -0 $BP 2>/dev/null; do
  echo "$(date +%T) server_rss_kb=$(rss $SP) worker_rss_kb=$(rss $WP)" >>"$OUT/soak.txt"
  sleep 30
done
wait $BP
echo "end server_rss_kb=$(rss $SP) server_peak_kb=$(hwm $SP) worker_rss_kb=$(rss $WP) worker_peak_kb=$(hwm $WP)" | tee -a "$OUT/soak.txt"

cat >"$OUT/slow.yaml" <<'YAML'
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: slow
  path: soak/slow
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: http://127.0.0.1:18998/slow
YAML
"$MR" register "$OUT/slow.yaml" --server "$API" >/dev/null
echo "in flight: worker_rss_kb=$(rss $WP) before" | tee "$OUT/inflight.txt"
seq 1 150 | xargs -P 50 -I{} curl -s -XPOST -H 'Content-Type: application/json' -d '{"path":"soak/slow"}' -o /dev/null "$API/api/execute"
for _ in $(seq 1 10); do
  n=$(curl -s http://127.0.0.1:19091/metrics | awk '/^millrace_worker_in_flight{stream="commands"} /{print $2}')
  echo "$(date +%T) in_flight=$n worker_rss_kb=$(rss $WP)" >>"$OUT/inflight.txt"
  sleep 1.5
done
echo "in flight: worker_rss_kb=$(rss $WP) worker_peak_kb=$(hwm $WP)" | tee -a "$OUT/inflight.txt"
