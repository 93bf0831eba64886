#!/usr/bin/env bash
# Results live in variables named <run>_<field>, set through printf -v by run_wrk/measure.
# shellcheck disable=SC2154
# Image benchmarks: POST /v1/images/generations through imagegate against the fake OpenAI
# Images upstream (tests/fakes/fake_openai.py), on loopback, in one run.
#
#   bench/bench_images.sh
#
#   1. Throughput: wrk POSTs {"model":"gpt-image-2","prompt":"bench","size":"1024x1024",
#      "response_format":"url"} (a small solid PNG from the fake) to the fake directly, through
#      nginx proxy_pass (keep-alive upstream) and through imagegate (auth, reserve, upstream
#      call, store, settle, url reply), at each client concurrency of BENCH_CONNECTIONS (all
#      three at 32, then all three at 64, ...). Target: imagegate >= 0.5x nginx req/s. imagegate's
#      group commit amortizes better with more requests in flight, nginx's rate stays flat, so
#      the ratio is printed per concurrency and judged at each.
#   2. 2,000 concurrent generations, the fake taking 10 s each (asyncio client, one connection
#      per request): all 200, charged exactly once each (balance delta, `ledger check`), the
#      fake's max_in_flight, imagegate's peak RSS (VmHWM). Target: peak RSS < 300 MB.
#   3. One 4K image (3840x2160 noisy PNG, ~25 MB, b64 in the upstream reply): imagegate's VmHWM
#      growth per request versus the PNG size, with response_format url (target < 3x) and, for
#      information, b64_json.
# Always exits 0 once the benchmark ran; a missed target prints MISSED.
#
#   This VM's speed drifts by +-10-20 % from minute to minute, nginx included, so with
#   BENCH_REPEATS=N (default 1) the nginx and imagegate runs alternate N times at each
#   concurrency and the median of the N paired ratios (the lower middle one for an even N)
#   is the one judged.
# Knobs: BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_CONNECTIONS ("32 64 128"), BENCH_THREADS (1),
# BENCH_REPEATS (1),
# BENCH_CONCURRENT (2000), BENCH_SLOW_MS (10000), BENCH_4K_REPEATS (3), NGINX_WORKERS (auto),
# BENCH_SKIP (space-separated part numbers to skip, e.g. "1"), BENCH_KEEP_TMP.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
CONNS_LIST="${BENCH_CONNECTIONS:-32 64 128}"
CONNS="${CONNS_LIST%% *}"
REPEATS="${BENCH_REPEATS:-1}"
THREADS="${BENCH_THREADS:-1}"
CONCURRENT="${BENCH_CONCURRENT:-2000}"
SLOW_MS="${BENCH_SLOW_MS:-10000}"
REPEATS_4K="${BENCH_4K_REPEATS:-3}"
SKIP=" ${BENCH_SKIP:-} "
GEN=/v1/images/generations
BODY_1K='{"model":"gpt-image-2","prompt":"bench","size":"1024x1024","response_format":"url"}'

bench_need_tools bench_images wrk nginx curl python3

# 2,000 client sockets + 2,000 upstream sockets in imagegate + 2,000 in the fake: raise the
# descriptor limit before anything starts (children inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE="$(ulimit -n)"

bench_init images
bench_need_release_build
BIN="$BENCH_REPO/build/release/imagegate"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
BACKGROUND_BUSY="$(machine_busy_pct 2)"
if [ "$BACKGROUND_BUSY" -gt 10 ]; then
  bench_log "WARNING: the machine is already ${BACKGROUND_BUSY}% busy (load $LOADAVG_START) before"
  bench_log "         the benchmark starts; the figures will be distorted (builds, tests running?)"
fi
write_wrk_scripts
CLK_TCK="$(getconf CLK_TCK)"
CMDS=()

bench_log "starting the fake upstream"
start_fake_openai "$BENCH_TMP/fake"
bench_log "fake pid $FAKE_PID port $FAKE_PORT"

# write_config FILE: imagegate config pointing gpt-image-2 at the fake.
write_config() {
  cat >"$1" <<EOF
[server]
max_connections = 10000
access_log = true

[bootstrap]
free_credits = "1000000"

[images]
default_response_format = "url"
upstream_max_connections_per_host = 4096

[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:$FAKE_PORT/v1"
api_key = "x"
timeout_ms = 120000

[[models]]
id = "gpt-image-2"
channels = ["fake"]
EOF
}
CFG="$BENCH_TMP/imagegate.toml"
write_config "$CFG"

# ig_start NAME: a fresh imagegate (own data dir) on the config above; VmHWM reset after the
# bootstrap (argon2id of the admin password peaks at ~30 MB on first start).
ig_start() {
  IG_DATA="$BENCH_TMP/$1"
  start_imagegate "$IG_DATA" "$CFG"
  IG_HWM_STARTUP="$(vm_field "$IG_PID" VmHWM)"
  reset_hwm "$IG_PID" || IG_HWM_STARTUP="$IG_HWM_STARTUP (not reset)"
  bench_log "imagegate $1: pid $IG_PID port $IG_PORT (startup peak $IG_HWM_STARTUP)"
}
credits() {
  curl -fsS -H "Authorization: Bearer $IG_KEY" "http://127.0.0.1:$IG_PORT/v1/credits" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["credits"], d["reserved"])'
}
ledger_check() {
  local out rc=0
  out="$(IMAGEGATE_DATA_DIR="$IG_DATA" "$BIN" --config "$CFG" ledger check 2>&1)" || rc=$?
  echo "$(tail -2 <<<"$out" | tr '\n' ' ')(exit $rc)"
}
kb() { awk '{print $1}' <<<"$1"; }
# rep_suffix N: the result-name suffix of part 1's Nth paired run ("" for the first).
rep_suffix() { if [ "$1" -gt 1 ]; then echo "_r$1"; fi; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# =============================================================================================
# 1. Throughput: fake direct vs nginx proxy vs imagegate
# =============================================================================================
if [[ "$SKIP" != *" 1 "* ]]; then
  ig_start ig1
  start_nginx_proxy "$BENCH_TMP/nginx" "$FAKE_PORT"
  NGX_WORKER_PIDS="$(child_pids "$NGX_PID")"
  bench_log "nginx master $NGX_PID workers $NGX_WORKER_PIDS port $NGX_PORT"
  POST_LUA="$BENCH_TMP/post.lua"
  write_wrk_post_script "$POST_LUA" "$BODY_1K"
  AUTH="Authorization: Bearer $IG_KEY"
  FAKE_URL="http://127.0.0.1:$FAKE_PORT$GEN"
  NGX_URL="http://127.0.0.1:$NGX_PORT$GEN"
  IG_URL="http://127.0.0.1:$IG_PORT$GEN"

  # Sanity: one request each, reply sizes for the record.
  for t in fake ngx ig; do
    u_var="${t^^}_URL"
    code="$(curl -sS -o "$BENCH_TMP/$t.reply" -w '%{http_code}' -H "$AUTH" \
      -H 'Content-Type: application/json' --data "$BODY_1K" "${!u_var}")"
    [ "$code" = 200 ] || {
      echo "bench_images: $t answered $code:" >&2
      head -c 400 "$BENCH_TMP/$t.reply" >&2
      exit 1
    }
    printf -v "${t}_reply_bytes" '%s' "$(wc -c <"$BENCH_TMP/$t.reply")"
  done
  PNG_1K_BYTES="$(python3 -c 'import json,sys,base64; print(len(base64.b64decode(json.load(open(sys.argv[1]))["data"][0]["b64_json"])))' "$BENCH_TMP/fake.reply")"
  bench_log "reply bytes: fake $fake_reply_bytes, nginx $ngx_reply_bytes, imagegate $ig_reply_bytes (PNG $PNG_1K_BYTES)"

  check_servers1() {
    ensure_alive "$FAKE_PID" fake "$FAKE_LOG"
    ensure_alive "$NGX_PID" nginx "$BENCH_TMP/nginx/logs/error.log"
    ensure_alive "$IG_PID" imagegate "$IG_STDERR"
  }
  # measure1 NAME URL -- PIDS...: one wrk run; CPU of the server(s) and of the fake per request.
  measure1() {
    local name="$1" url="$2"
    shift 3
    local pids=("$@") t0 f0 t1 f1 m0 mt0 m1 mt1
    wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "$AUTH" -s "$POST_LUA" "$url" >/dev/null 2>&1 || true
    t0="$(cpu_ticks "${pids[@]}")"
    f0="$(cpu_ticks "$FAKE_PID")"
    read -r m0 mt0 <<<"$(machine_ticks)"
    run_wrk "$name" -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$AUTH" -s "$POST_LUA" "$url" ||
      { check_servers1; exit 1; }
    check_servers1
    t1="$(cpu_ticks "${pids[@]}")"
    f1="$(cpu_ticks "$FAKE_PID")"
    read -r m1 mt1 <<<"$(machine_ticks)"
    local secs_var="${name}_secs" reqs_var="${name}_requests"
    printf -v "${name}_srv_cores" '%s' \
      "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="${!secs_var}" 'BEGIN { printf "%.2f", d / hz / s }')"
    printf -v "${name}_cpu_us" '%s' \
      "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${!reqs_var}" 'BEGIN { printf "%.0f", (n > 0 ? d / hz * 1e6 / n : 0) }')"
    printf -v "${name}_fake_cores" '%s' \
      "$(awk -v d=$((f1 - f0)) -v hz="$CLK_TCK" -v s="${!secs_var}" 'BEGIN { printf "%.2f", d / hz / s }')"
    printf -v "${name}_busy" '%s' \
      "$(awk -v b=$((m1 - m0)) -v t=$((mt1 - mt0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }')"
    CMDS+=("wrk -t$THREADS -c$CONNS -d$DURATION --latency -H \"Authorization: Bearer \$KEY\" -s post.lua ${url}")
  }

  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
  P_IG_FAKE_GEN=0 P_IG_FAKE_CONNS=0
  for CONNS in $CONNS_LIST; do
    bench_log "1. throughput at $CONNS connections: fake direct ($DURATION)"
    measure1 "p_fake_$CONNS" "$FAKE_URL" -- "$FAKE_PID"
    pair_ratios=()
    for ((rep = 1; rep <= REPEATS; rep++)); do
      suffix="$(rep_suffix "$rep")"
      bench_log "1. throughput at $CONNS connections: nginx -> fake (run $rep of $REPEATS)"
      # shellcheck disable=SC2086
      measure1 "p_ngx_$CONNS$suffix" "$NGX_URL" -- "$NGX_PID" $NGX_WORKER_PIDS
      bench_log "1. throughput at $CONNS connections: imagegate -> fake (run $rep of $REPEATS)"
      curl -fsS -o /dev/null -X POST "http://127.0.0.1:$FAKE_PORT/_reset"
      measure1 "p_ig_$CONNS$suffix" "$IG_URL" -- "$IG_PID"
      # Upstream connections imagegate opened (warm-up included) vs generations it asked for.
      read -r gens conns <<<"$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_stats" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["generations"], d["connections"])')"
      P_IG_FAKE_GEN=$((P_IG_FAKE_GEN + gens)) P_IG_FAKE_CONNS=$((P_IG_FAKE_CONNS + conns))
      v_ig="p_ig_$CONNS${suffix}_rps" v_ngx="p_ngx_$CONNS${suffix}_rps"
      pair_ratios+=("$(ratio "${!v_ig}" "${!v_ngx}")")
    done
    printf -v "PAIRS_$CONNS" '%s' "${pair_ratios[*]}"
    v_ig="p_ig_${CONNS}_rps" v_ngx="p_ngx_${CONNS}_rps" v_fake="p_fake_${CONNS}_rps"
    printf -v "R_IG_NGX_$CONNS" '%s' \
      "$(printf '%s\n' "${pair_ratios[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    printf -v "R_IG_FAKE_$CONNS" '%s' "$(ratio "${!v_ig}" "${!v_fake}")"
    printf -v "R_NGX_FAKE_$CONNS" '%s' "$(ratio "${!v_ngx}" "${!v_fake}")"
    v_r="R_IG_NGX_$CONNS"
    printf -v "OK1_$CONNS" '%s' "$(awk -v r="${!v_r}" 'BEGIN { print ((r >= 0.5) ? "met" : "MISSED") }')"
    v_ok="OK1_$CONNS"
  done
  IG1_HWM="$(vm_field "$IG_PID" VmHWM)"
  IG1_THREADS="$(awk '$1 == "Threads:" {print $2}' "/proc/$IG_PID/status")"
  IG1_LEDGER="$(ledger_check)"
  stop_bench_pid "$IG_PID"
  stop_bench_pid "$NGX_PID"
fi

# =============================================================================================
# 2. 2,000 concurrent slow generations
# =============================================================================================
cat >"$BENCH_TMP/burst.py" <<'EOF'
# burst.py PORT KEY N BODY: N concurrent POSTs (one connection each, Connection: close), asyncio.
import asyncio, collections, json, sys, time

port, key, n, body = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
req = (f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
       f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body

async def one(i):
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        writer.write(req)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 300)
        writer.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else -1
        ok_body = status != 200 or b'"url"' in data
        return status if ok_body else -2, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001
        return type(e).__name__, time.monotonic() - t0

async def main():
    t0 = time.monotonic()
    res = await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.monotonic() - t0
    counts = collections.Counter(r[0] for r in res)
    lat = sorted(r[1] for r in res)
    print(json.dumps({"wall_s": round(wall, 2), "statuses": {str(k): v for k, v in counts.items()},
                      "ok": counts.get(200, 0), "lat_min_s": round(lat[0], 2),
                      "lat_p50_s": round(lat[len(lat) // 2], 2), "lat_max_s": round(lat[-1], 2)}))

asyncio.run(main())
EOF

if [[ "$SKIP" != *" 2 "* ]]; then
  ig_start ig2
  fake_control "{\"mode\":\"ok\",\"delay_ms\":$SLOW_MS,\"noisy\":false}"
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$FAKE_PORT/_reset"
  read -r C2_BEFORE R2_BEFORE <<<"$(credits)"
  IG2_RSS_IDLE="$(vm_field "$IG_PID" VmRSS)"
  bench_log "2. $CONCURRENT concurrent generations, upstream delay $SLOW_MS ms (credits before: $C2_BEFORE)"
  # Sample imagegate's threads, RSS and open descriptors while the burst runs.
  (
    max_t=0 max_fd=0
    while kill -0 "$IG_PID" 2>/dev/null && [ ! -e "$BENCH_TMP/burst.done" ]; do
      t="$(awk '$1 == "Threads:" {print $2}' "/proc/$IG_PID/status" 2>/dev/null || echo 0)"
      fd="$(find "/proc/$IG_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
      [ "${t:-0}" -gt "$max_t" ] && max_t="$t"
      [ "${fd:-0}" -gt "$max_fd" ] && max_fd="$fd"
      echo "$max_t $max_fd" >"$BENCH_TMP/burst.sample"
      sleep 0.5
    done
  ) &
  SAMPLER=$!
  f0="$(cpu_ticks "$IG_PID")"
  python3 "$BENCH_TMP/burst.py" "$IG_PORT" "$IG_KEY" "$CONCURRENT" "$BODY_1K" >"$BENCH_TMP/burst.json"
  f1="$(cpu_ticks "$IG_PID")"
  touch "$BENCH_TMP/burst.done"
  wait "$SAMPLER" 2>/dev/null || true
  ensure_alive "$IG_PID" imagegate "$IG_STDERR"
  B2="$(cat "$BENCH_TMP/burst.json")"
  read -r B2_MAX_THREADS B2_MAX_FDS <<<"$(cat "$BENCH_TMP/burst.sample" 2>/dev/null || echo '? ?')"
  B2_OK="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$B2")"
  B2_CPU_S="$(awk -v d=$((f1 - f0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", d / hz }')"
  IG2_HWM="$(vm_field "$IG_PID" VmHWM)"
  IG2_RSS_AFTER="$(vm_field "$IG_PID" VmRSS)"
  sleep 1
  read -r C2_AFTER R2_AFTER <<<"$(credits)"
  FAKE2_STATS="$(curl -fsS "http://127.0.0.1:$FAKE_PORT/_stats" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["generations"], d["max_in_flight"], d["connections"])')"
  read -r FAKE2_GEN FAKE2_MAX_INFLIGHT FAKE2_CONNS <<<"$FAKE2_STATS"
  C2_DELTA="$(awk -v a="$C2_BEFORE" -v b="$C2_AFTER" 'BEGIN { printf "%g", a - b }')"
  IG2_LEDGER="$(ledger_check)"
  stop_bench_pid "$IG_PID"
  OK2_ALL="$([ "$B2_OK" = "$CONCURRENT" ] && echo met || echo MISSED)"
  OK2_CHARGE="$([ "$C2_DELTA" = "$CONCURRENT" ] && awk -v r="$R2_AFTER" 'BEGIN { exit !(r == 0) }' && [[ "$IG2_LEDGER" == *"ledger OK"* ]] && echo met || echo MISSED)"
  OK2_RSS="$(awk -v k="$(kb "$IG2_HWM")" 'BEGIN { print ((k < 300 * 1024) ? "met" : "MISSED") }')"
fi

# =============================================================================================
# 3. One 4K image: VmHWM growth per request vs the PNG's size
# =============================================================================================
if [[ "$SKIP" != *" 3 "* ]]; then
  ig_start ig3
  fake_control '{"mode":"ok","delay_ms":0,"noisy":true}'
  AUTH="Authorization: Bearer $IG_KEY"
  IG_URL="http://127.0.0.1:$IG_PORT$GEN"
  body_4k() { printf '{"model":"gpt-image-2","prompt":"bench","size":"3840x2160","response_format":"%s"}' "$1"; }
  # one_4k FMT OUT: one request, prints "http_code reply_bytes seconds".
  one_4k() {
    curl -sS -o "$2" -w '%{http_code} %{size_download} %{time_total}\n' -H "$AUTH" \
      -H 'Content-Type: application/json' --data "$(body_4k "$1")" "$IG_URL"
  }
  png_size_of_url_reply() {
    local url
    url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"][0]["url"])' "$1")"
    curl -fsS -o "$BENCH_TMP/4k.png" -H "$AUTH" "$url" && wc -c <"$BENCH_TMP/4k.png"
  }
  # Warm-up on a small image so the connection pools, SQLite statements and allocator arenas
  # exist before the baseline.
  curl -fsS -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' --data "$BODY_1K" "$IG_URL"
  reset_hwm "$IG_PID"
  H3_BASE="$(kb "$(vm_field "$IG_PID" VmHWM)")"
  bench_log "3. 4K url: baseline VmHWM $H3_BASE kB"
  read -r s3 _ t3 <<<"$(one_4k url "$BENCH_TMP/4k-url.json")"
  [ "$s3" = 200 ] || { echo "bench_images: 4K url answered $s3" >&2; head -c 400 "$BENCH_TMP/4k-url.json" >&2; exit 1; }
  H3_URL1="$(kb "$(vm_field "$IG_PID" VmHWM)")"
  T3_URL1="$t3"
  PNG_4K_BYTES="$(png_size_of_url_reply "$BENCH_TMP/4k-url.json")"
  T3_REST=""
  for _ in $(seq 2 "$REPEATS_4K"); do
    read -r s3 _ t3 <<<"$(one_4k url "$BENCH_TMP/4k-url.json")"
    [ "$s3" = 200 ] || { echo "bench_images: 4K url answered $s3" >&2; exit 1; }
    T3_REST+="$t3 "
  done
  H3_URLN="$(kb "$(vm_field "$IG_PID" VmHWM)")"
  RSS3_AFTER_URL="$(kb "$(vm_field "$IG_PID" VmRSS)")"
  # b64_json: baseline = current RSS (VmHWM reset), then one request.
  reset_hwm "$IG_PID"
  H3_B64_BASE="$(kb "$(vm_field "$IG_PID" VmHWM)")"
  read -r s3 B3_B64_BYTES T3_B64 <<<"$(one_4k b64_json "$BENCH_TMP/4k-b64.json")"
  [ "$s3" = 200 ] || { echo "bench_images: 4K b64_json answered $s3" >&2; exit 1; }
  H3_B64="$(kb "$(vm_field "$IG_PID" VmHWM)")"
  UP_4K_BYTES="$(python3 -c 'import math,sys; n=int(sys.argv[1]); print(4*math.ceil(n/3))' "$PNG_4K_BYTES")"
  IG3_LEDGER="$(ledger_check)"
  ensure_alive "$IG_PID" imagegate "$IG_STDERR"
  stop_bench_pid "$IG_PID"
  G3_URL1=$((H3_URL1 - H3_BASE))
  G3_URLN=$((H3_URLN - H3_BASE))
  G3_B64=$((H3_B64 - H3_B64_BASE))
  X3_URL1="$(awk -v g="$G3_URL1" -v p="$PNG_4K_BYTES" 'BEGIN { printf "%.2f", g * 1024 / p }')"
  X3_URLN="$(awk -v g="$G3_URLN" -v p="$PNG_4K_BYTES" 'BEGIN { printf "%.2f", g * 1024 / p }')"
  X3_B64="$(awk -v g="$G3_B64" -v p="$PNG_4K_BYTES" 'BEGIN { printf "%.2f", g * 1024 / p }')"
  OK3="$(awk -v a="$X3_URL1" -v b="$X3_URLN" 'BEGIN { print ((a < 3 && b < 3) ? "met" : "MISSED") }')"
fi

# =============================================================================================
# Report
# =============================================================================================
LOADAVG_END="$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== image benchmarks: imagegate vs the fake OpenAI upstream ($(date -u '+%Y-%m-%d %H:%M UTC')) =="
echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr)"
echo "load: ${BACKGROUND_BUSY}% busy before the run, load average $LOADAVG_START at start, $LOADAVG_END at the end$( [ "$BACKGROUND_BUSY" -gt 10 ] && echo ' -- WARNING: not idle, figures distorted')"
echo "imagegate: build/release/imagegate ($(cd "$BENCH_REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?') + working tree), access log on, default_response_format url, open files limit $NOFILE"
echo "fake upstream: tests/fakes/fake_openai.py (python3 asyncio, one thread)"

if [[ "$SKIP" != *" 1 "* ]]; then
  echo
  echo "-- 1. POST $GEN, 1024x1024 solid PNG ($PNG_1K_BYTES bytes), response_format url --"
  echo "reply bytes: fake/nginx $fake_reply_bytes (b64 PNG), imagegate $ig_reply_bytes (url)"
  printf '%-30s %9s %8s %8s %8s %7s %11s %11s %11s %6s\n' run req/s "p50 ms" "p90 ms" "p99 ms" errors \
    "srv us/req" "srv cores" "fake cores" "busy"
  for c in $CONNS_LIST; do
  runs=("p_fake_$c:fake direct, $c conns")
  for ((rep = 1; rep <= REPEATS; rep++)); do
    suffix="$(rep_suffix "$rep")" tag=""
    [ "$REPEATS" -gt 1 ] && tag=" #$rep"
    runs+=("p_ngx_$c$suffix:nginx -> fake, $c conns$tag" "p_ig_$c$suffix:imagegate -> fake, $c conns$tag")
  done
  for r in "${runs[@]}"; do
    n="${r%%:*}" label="${r#*:}"
    v_rps="${n}_rps" v50="${n}_p50" v90="${n}_p90" v99="${n}_p99" ve="${n}_errors" vc="${n}_cpu_us"
    vs="${n}_srv_cores" vf="${n}_fake_cores" vb="${n}_busy"
    srv_cpu="${!vc}" srv_cores="${!vs}"
    [ "${n#p_fake}" != "$n" ] && srv_cpu="-" && srv_cores="-"
    printf '%-30s %9s %8s %8s %8s %7s %11s %11s %11s %5s%%\n' "$label" "${!v_rps}" "${!v50}" "${!v90}" \
      "${!v99}" "${!ve}" "$srv_cpu" "$srv_cores" "${!vf}" "${!vb}"
  done
  done
  for c in $CONNS_LIST; do
    v1="R_IG_NGX_$c" v2="R_IG_FAKE_$c" v3="R_NGX_FAKE_$c"
    v4="PAIRS_$c"
    if [ "$REPEATS" -gt 1 ]; then
      echo "ratios at $c conns: imagegate/nginx ${!v1} (median of the paired runs: ${!v4// /, }), imagegate/direct ${!v2} and nginx/direct ${!v3} (first runs)"
    else
      echo "ratios at $c conns: imagegate/nginx ${!v1}, imagegate/direct ${!v2}, nginx/direct ${!v3}"
    fi
  done
  echo "imagegate: VmHWM $IG1_HWM (after startup reset), $IG1_THREADS threads; ledger check: $IG1_LEDGER"
  echo "imagegate -> fake (warm-ups included, all concurrencies): $P_IG_FAKE_GEN generations over $P_IG_FAKE_CONNS upstream connections"
  echo "(fake cores ~1.0 means the single-threaded Python fake is the bottleneck)"
fi
if [[ "$SKIP" != *" 2 "* ]]; then
  echo
  echo "-- 2. $CONCURRENT concurrent generations, upstream delay $SLOW_MS ms, 1024x1024 url --"
  echo "client: $B2"
  echo "credits: before $C2_BEFORE, after $C2_AFTER (reserved before $R2_BEFORE, after $R2_AFTER); charged $C2_DELTA (expected $CONCURRENT x 1)"
  echo "ledger check: $IG2_LEDGER"
  echo "fake: generations $FAKE2_GEN, max_in_flight $FAKE2_MAX_INFLIGHT, connections $FAKE2_CONNS"
  echo "imagegate: peak RSS (VmHWM) $IG2_HWM, idle VmRSS $IG2_RSS_IDLE, VmRSS after $IG2_RSS_AFTER;" \
    "max threads $B2_MAX_THREADS, max open fds $B2_MAX_FDS; CPU ${B2_CPU_S} s for the burst"
fi
if [[ "$SKIP" != *" 3 "* ]]; then
  echo
  echo "-- 3. 3840x2160 noisy PNG ($PNG_4K_BYTES bytes, $UP_4K_BYTES bytes of base64 in the upstream reply) --"
  printf '%-40s %12s %12s %12s %10s\n' run "base kB" "VmHWM kB" "growth kB" "x PNG"
  printf '%-40s %12s %12s %12s %10s\n' "url, 1st request (${T3_URL1}s)" "$H3_BASE" "$H3_URL1" "$G3_URL1" "$X3_URL1"
  printf '%-40s %12s %12s %12s %10s\n' "url, after $REPEATS_4K sequential" "$H3_BASE" "$H3_URLN" "$G3_URLN" "$X3_URLN"
  printf '%-40s %12s %12s %12s %10s\n' "b64_json, 1 request (${T3_B64}s)" "$H3_B64_BASE" "$H3_B64" "$G3_B64" "$X3_B64"
  echo "b64_json reply: $B3_B64_BYTES bytes; later url requests took: ${T3_REST:-n/a}s; VmRSS after the url runs $RSS3_AFTER_URL kB"
  echo "ledger check: $IG3_LEDGER"
fi
echo
echo "targets:"
if [[ "$SKIP" != *" 1 "* ]]; then
  for c in $CONNS_LIST; do
    v_r="R_IG_NGX_$c" v_ok="OK1_$c"
    printf '  1. imagegate >= 0.5x nginx req/s, %3s conns:  %s x -> %s\n' "$c" "${!v_r}" "${!v_ok}"
  done
fi
if [[ "$SKIP" != *" 2 "* ]]; then
  echo "  2. all $CONCURRENT succeed:                          $B2_OK -> $OK2_ALL"
  echo "     each charged once (delta, ledger check):   $C2_DELTA -> $OK2_CHARGE"
  echo "     peak RSS < 300 MB:                         $(mb "$(kb "$IG2_HWM")") MB -> $OK2_RSS"
fi
[[ "$SKIP" != *" 3 "* ]] && echo "  3. 4K url: VmHWM growth < 3x PNG size:        $X3_URL1 x (1st), $X3_URLN x ($REPEATS_4K seq) -> $OK3"
echo
echo "commands (KEY = the bootstrap key; post.lua = POST $BODY_1K + report.lua's done()):"
for c in "${CMDS[@]}"; do echo "  $c"; done
[[ "$SKIP" != *" 2 "* ]] && echo "  python3 burst.py \$IG_PORT \$KEY $CONCURRENT '$BODY_1K'   # fake: POST /_control {\"delay_ms\":$SLOW_MS}"
[[ "$SKIP" != *" 3 "* ]] && echo "  curl -H \"Authorization: Bearer \$KEY\" --data '$(body_4k url)' http://127.0.0.1:\$IG_PORT$GEN   # fake: POST /_control {\"noisy\":true}; also b64_json"
exit 0
