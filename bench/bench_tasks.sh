#!/usr/bin/env bash
# Results live in variables named <run>_<field>, set through printf -v by run_wrk.
# shellcheck disable=SC2154
# Async task benchmark: 10,000 tasks created through imagegate against the fake Kie upstream
# (tests/fakes/fake_kie.py), each finishing upstream in 1-5 s, with a signed callback per task to
# a local receiver, in one run.
#
#   bench/bench_tasks.sh
#
#   1. Reference: GET /v1/me through the same imagegate (wrk, BENCH_DURATION).
#   2. Create throughput: wrk POSTs seed-002 task creates
#      {"model":"gpt-image-2","prompt":"bench","callback_url":...} until it has BENCH_TASKS
#      replies (counted by a response() hook; a few in-flight creates overshoot). Target: create
#      req/s >= 0.5x the GET /v1/me req/s.
#   3. Drain: time from the first create until every task is final (the store is polled
#      read-only), all succeeded, `ledger check` OK; peak RSS (VmHWM) over the whole run.
#   4. Callback lag: receiver arrival time minus the job's finished_at_ms, p50/p99, over every
#      task (each delivered once, signature not checked here: tests/blackbox does that).
# Always exits 0 once the benchmark ran; a missed target prints MISSED.
#
# Knobs: BENCH_TASKS (10000), BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_THREADS (1),
# BENCH_MAX_RUNNING (256), BENCH_POLL_MS (1000), BENCH_DRAIN_TIMEOUT (900 s), BENCH_KEEP_TMP.
# BENCH_CREATES_ONLY=1: creates alone (the upstream never finishes a task and max_running is 1,
# so nothing else runs beside them); prints steps 1-2 and the server's CPU per create, then stops.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TASKS="${BENCH_TASKS:-10000}"
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-1}"
MAX_RUNNING="${BENCH_MAX_RUNNING:-256}"
POLL_MS="${BENCH_POLL_MS:-1000}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-900}"
CREATES_ONLY="${BENCH_CREATES_ONLY:-}"
KIE_DELAY_MS=1000
KIE_DELAY_MAX_MS=5000
if [ -n "$CREATES_ONLY" ]; then
  MAX_RUNNING=1
  KIE_DELAY_MS=3600000
  KIE_DELAY_MAX_MS=3600000
fi

bench_need_tools bench_tasks wrk curl python3
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bench_init tasks
bench_need_release_build
BIN="$BENCH_REPO/build/release/imagegate"
BACKGROUND_BUSY="$(machine_busy_pct 2)"
if [ "$BACKGROUND_BUSY" -gt 10 ]; then
  bench_log "WARNING: the machine is already ${BACKGROUND_BUSY}% busy before the benchmark starts"
fi
write_wrk_scripts

# --- the fake Kie upstream (1-5 s per task) and the callback receiver -------------------------
KIE_LOG="$BENCH_TMP/kie.log"
python3 "$BENCH_REPO/tests/fakes/fake_kie.py" --port 0 --delay-ms "$KIE_DELAY_MS" \
  --delay-max-ms "$KIE_DELAY_MAX_MS" \
  >"$KIE_LOG" 2>&1 &
KIE_PID=$!
BENCH_PIDS+=("$KIE_PID")
wait_for_line "$KIE_LOG" 'fake-kie listening on ' "$KIE_PID" || { cat "$KIE_LOG" >&2; exit 1; }
KIE_PORT="$(sed -nE 's/^fake-kie listening on [0-9.]+:([0-9]+).*/\1/p' "$KIE_LOG" | head -1)"

RX_LOG="$BENCH_TMP/receiver.log"
RX_OUT="$BENCH_TMP/arrivals.tsv"
python3 - "$RX_OUT" >"$RX_LOG" 2>&1 <<'EOF' &
# Minimal asyncio callback receiver: records "<webhook-id>\t<arrival unix ms>" per request.
import asyncio, sys, time
out = open(sys.argv[1], "w", buffering=1)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, msg = 0, ""
            for line in head.decode("latin-1").split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.lower() == "content-length":
                    length = int(v)
                elif k.lower() == "webhook-id":
                    msg = v.strip()
            await reader.readexactly(length)
            out.write(f"{msg}\t{time.time() * 1000:.1f}\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(f"receiver listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
EOF
RX_PID=$!
BENCH_PIDS+=("$RX_PID")
wait_for_line "$RX_LOG" 'receiver listening on ' "$RX_PID" || { cat "$RX_LOG" >&2; exit 1; }
RX_PORT="$(sed -nE 's/^receiver listening on [0-9.]+:([0-9]+).*/\1/p' "$RX_LOG" | head -1)"

CFG="$BENCH_TMP/imagegate.toml"
cat >"$CFG" <<EOF
[server]
max_connections = 10000

[bootstrap]
free_credits = "1000000"

[images]
allow_private_reference_urls = true

[tasks]
profile = "seed002"
max_running = $MAX_RUNNING

[callbacks]
max_concurrent = 256

[[providers]]
name = "kie"
type = "kie"
base_url = "http://127.0.0.1:$KIE_PORT"
api_key = "test-kie-key"
poll_interval_ms = $POLL_MS

[[models]]
id = "gpt-image-2"
channels = ["kie"]
EOF
IG_DATA="$BENCH_TMP/ig"
start_imagegate "$IG_DATA" "$CFG"
reset_hwm "$IG_PID" || true
bench_log "imagegate pid $IG_PID port $IG_PORT; fake kie $KIE_PORT; receiver $RX_PORT"
AUTH="Authorization: Bearer $IG_KEY"

# --- 1. reference: GET /v1/me -------------------------------------------------------------------
run_wrk me -t"$THREADS" -c"$CONNS" -d"$DURATION" -H "$AUTH" -s "$BENCH_TMP/report.lua" \
  "http://127.0.0.1:$IG_PORT/v1/me"
bench_log "GET /v1/me: $me_rps req/s (p99 $me_p99 ms, errors $me_errors)"

# --- 2. create throughput: exactly TASKS creates -------------------------------------------------
CREATE_LUA="$BENCH_TMP/create.lua"
write_wrk_post_script "$CREATE_LUA" \
  "{\"model\":\"gpt-image-2\",\"prompt\":\"bench\",\"callback_url\":\"http://127.0.0.1:$RX_PORT/cb\"}"
DB="$IG_DATA/imagegate.db"
count_sql() {
  python3 - "$DB" "$1" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
print(con.execute(sys.argv[2]).fetchone()[0])
EOF
}
# wrk has no request count: a response() hook touches a flag file once the thread has its share
# of TASKS replies, and a shell loop then interrupts wrk (which reports as usual; a few in-flight
# creates overshoot). Counting in wrk, not by polling the database, keeps other processes' CPU
# out of the measurement.
DONE_FLAG="$BENCH_TMP/creates.done"
{
  printf 'local limit = %d\n' "$(((TASKS + THREADS - 1) / THREADS))"
  printf 'local flag = "%s"\n' "$DONE_FLAG"
  cat <<'EOF'
local seen = 0
response = function(status, headers, body)
  seen = seen + 1
  if seen == limit then
    local f = io.open(flag, "w")
    if f then f:close() end
  end
end
EOF
} >>"$CREATE_LUA"
(
  until [ -e "$DONE_FLAG" ]; do sleep 0.02; done
  pkill -INT -f "$CREATE_LUA" 2>/dev/null || true
) &
STOPPER_PID=$!
BENCH_PIDS+=("$STOPPER_PID")
START_MS="$(date +%s%3N)"
CPU0="$(cpu_ticks "$IG_PID")"
run_wrk create -t"$THREADS" -c"$CONNS" -d600s -H "$AUTH" -s "$CREATE_LUA" \
  "http://127.0.0.1:$IG_PORT/api/v1/images/generations"
CPU1="$(cpu_ticks "$IG_PID")"
CREATE_CPU_US="$(awk -v t="$((CPU1 - CPU0))" -v hz="$(getconf CLK_TCK)" -v n="$create_requests" \
  'BEGIN { printf "%.0f", (n > 0 ? t / hz * 1e6 / n : 0) }')"
bench_log "creates: $create_requests in ${create_secs}s = $create_rps req/s (p99 $create_p99 ms, errors $create_errors, imagegate ${CREATE_CPU_US} us CPU per create)"
if [ -n "$CREATES_ONLY" ]; then
  RATIO="$(awk -v a="$create_rps" -v b="$me_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
  cat <<EOF

== task creates alone ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, commit $(git -C "$BENCH_REPO" rev-parse --short HEAD 2>/dev/null || echo ?)) ==
GET /v1/me (reference)      $me_rps req/s   p99 $me_p99 ms
task creates (alone)        $create_rps req/s   p99 $create_p99 ms   ($create_requests creates, errors $create_errors)
imagegate CPU per create    ${CREATE_CPU_US} us
create / me ratio           ${RATIO}x
EOF
  exit 0
fi

# --- 3. drain --------------------------------------------------------------------------------------
DRAIN_MS=""
deadline=$(($(date +%s) + DRAIN_TIMEOUT))
while [ "$(date +%s)" -lt "$deadline" ]; do
  ensure_alive "$IG_PID" imagegate "$IG_STDERR"
  left="$(count_sql "SELECT COUNT(*) FROM jobs WHERE status IN ('queued','running')")"
  if [ "$left" = 0 ]; then
    DRAIN_MS=$(($(date +%s%3N) - START_MS))
    break
  fi
  sleep 0.5
done
PEAK_RSS="$(vm_field "$IG_PID" VmHWM)"
TOTAL="$(count_sql "SELECT COUNT(*) FROM jobs")"
SUCCEEDED="$(count_sql "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")"

# --- 4. callback lag ------------------------------------------------------------------------------
deadline=$(($(date +%s) + 60))
while [ "$(date +%s)" -lt "$deadline" ]; do
  delivered="$(count_sql "SELECT COUNT(*) FROM deliveries WHERE state = 'succeeded'")"
  [ "$delivered" -ge "$TOTAL" ] && break
  sleep 0.5
done
LAG="$(python3 - "$DB" "$RX_OUT" <<'EOF'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
finished = {f"msg_{i}": t for i, t in con.execute("SELECT id, finished_at_ms FROM jobs")}
arrivals = {}
for line in open(sys.argv[2]):
    msg, at = line.rstrip("\n").split("\t")
    arrivals.setdefault(msg, float(at))  # the first arrival of each message
lags = sorted(arrivals[m] - finished[m] for m in arrivals if m in finished and finished[m])
if not lags:
    print("0 0 0 0")
else:
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    dup = sum(1 for _ in open(sys.argv[2])) - len(arrivals)
    print(f"{len(lags)} {pick(0.5):.0f} {pick(0.99):.0f} {dup}")
EOF
)"
read -r LAG_N LAG_P50 LAG_P99 LAG_DUP <<<"$LAG"
LEDGER="$(IMAGEGATE_DATA_DIR="$IG_DATA" "$BIN" --config "$CFG" ledger check 2>&1 | tail -1)"

RATIO="$(awk -v a="$create_rps" -v b="$me_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
VERDICT="$(awk -v r="$RATIO" 'BEGIN { print (r >= 0.5 ? "met" : "MISSED") }')"
cat <<EOF

== async tasks ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, commit $(git -C "$BENCH_REPO" rev-parse --short HEAD 2>/dev/null || echo ?)) ==
GET /v1/me (reference)      $me_rps req/s   p99 $me_p99 ms
task creates                $create_rps req/s   p99 $create_p99 ms   ($create_requests creates, errors $create_errors, ${CREATE_CPU_US} us imagegate CPU each)
create / me ratio           ${RATIO}x   target >= 0.5x: $VERDICT
drain (first create -> all final)  ${DRAIN_MS:-timeout} ms   ($SUCCEEDED of $TOTAL succeeded; max_running $MAX_RUNNING, upstream 1-5 s, poll ${POLL_MS} ms)
peak RSS (VmHWM)            $PEAK_RSS
callback lag (finish -> receiver)  p50 ${LAG_P50} ms   p99 ${LAG_P99} ms   over $LAG_N callbacks (duplicates $LAG_DUP)
ledger                      $LEDGER
EOF
