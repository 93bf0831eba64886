#!/usr/bin/env bash
# Results live in variables named <run>_<field>, set through printf -v by run_wrk/measure.
# shellcheck disable=SC2154
# Platform benchmark: GET /v1/me with a valid API key through imagegate versus nginx serving the
# same JSON bytes as a static file, on this machine, in one run.
#
#   bench/bench_me.sh            (or: make bench)
#
# Measures, with wrk:
#   1. peak throughput and latency (closed loop, BENCH_CONNECTIONS connections) for both;
#   2. latency at half of imagegate's peak rate, paced by a wrk Lua delay() hook, for both at
#      the same rate;
#   3. (extra, BENCH_NO_LOG_VARIANT=1) imagegate's peak with its access log turned off.
# Then prints a summary, the imagegate/nginx ratio, imagegate's peak RSS and whether the targets
# (imagegate >= 0.5x nginx req/s; p99 < 5 ms at half peak) were met. Always exits 0 once the
# benchmark ran: a missed target prints MISSED, it does not fail the script.
#
# Knobs (environment): BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_CALIBRATE (3s, each
# half-rate calibration run), BENCH_CONNECTIONS (64),
# BENCH_THREADS (1, wrk threads), NGINX_WORKERS (auto = one per core, like imagegate's
# io_threads = 0), BENCH_NO_LOG_VARIANT (1), BENCH_KEEP_TMP (set: keep logs/temp dir).
#
# Fairness notes: wrk, the server under test and (idle) the other server share the same cores;
# both servers log every request to a file (imagegate: access log on stderr, its default;
# nginx: access_log, its default); both get identical request bytes including the
# Authorization header; nginx returns exactly the bytes imagegate returned.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-2s}"
CALIBRATE="${BENCH_CALIBRATE:-3s}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-1}"
NO_LOG_VARIANT="${BENCH_NO_LOG_VARIANT:-1}"
URI=/v1/me

bench_need_tools bench_me wrk nginx curl python3

bench_init me
bench_need_release_build
BACKGROUND_BUSY="$(machine_busy_pct 2)"
if [ "$BACKGROUND_BUSY" -gt 10 ]; then
  bench_log "WARNING: the machine is already ${BACKGROUND_BUSY}% busy before the benchmark starts;"
  bench_log "         the figures will be distorted (builds, tests running?)"
fi
write_wrk_scripts
CLK_TCK="$(getconf CLK_TCK)"

# --- targets ---------------------------------------------------------------------------------
bench_log "starting imagegate (release, access log on)"
start_imagegate "$BENCH_TMP/ig"
IG_URL="http://127.0.0.1:$IG_PORT$URI"
AUTH="Authorization: Bearer $IG_KEY"
status="$(curl -sS -o "$BENCH_TMP/me.json" -w '%{http_code}' -H "$AUTH" "$IG_URL")"
if [ "$status" != 200 ]; then
  echo "bench_me: GET $URI answered $status, expected 200:" >&2
  cat "$BENCH_TMP/me.json" >&2
  exit 1
fi
bench_log "imagegate pid $IG_PID port $IG_PORT, reply $(cat "$BENCH_TMP/me.json")"
IG_RSS_START="$(vm_field "$IG_PID" VmRSS)"
# The first start hashes the admin password with argon2id, which alone sets a ~30 MB peak.
# Record that, then reset the high-water mark (clear_refs 5) so VmHWM below is the load's peak.
IG_HWM_STARTUP="$(vm_field "$IG_PID" VmHWM)"
if ! echo 5 >"/proc/$IG_PID/clear_refs" 2>/dev/null; then IG_HWM_STARTUP="$IG_HWM_STARTUP (not reset)"; fi

bench_log "starting nginx (own prefix in $BENCH_TMP/nginx)"
start_nginx_static "$BENCH_TMP/nginx" "$URI" "$BENCH_TMP/me.json"
NGX_URL="http://127.0.0.1:$NGX_PORT$URI"
if ! cmp -s <(curl -sS -H "$AUTH" "$NGX_URL") "$BENCH_TMP/me.json"; then
  echo "bench_me: nginx does not return imagegate's body" >&2
  exit 1
fi
NGX_WORKER_PIDS="$(child_pids "$NGX_PID")"
bench_log "nginx master $NGX_PID workers $NGX_WORKER_PIDS port $NGX_PORT"

# Headers of each reply, for the record (sizes should be comparable).
IG_HDR_BYTES="$(curl -sS -D - -o /dev/null -H "$AUTH" "$IG_URL" | wc -c)"
NGX_HDR_BYTES="$(curl -sS -D - -o /dev/null -H "$AUTH" "$NGX_URL" | wc -c)"
BODY_BYTES="$(wc -c <"$BENCH_TMP/me.json")"

WRK_COMMON=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$AUTH")
show_cmd() { # the command line as run, shell-quoted, with the key replaced by $KEY
  local out="wrk" a
  for a in "$@"; do
    a="${a//$IG_KEY/\$KEY}"
    if [[ "$a" == *" "* ]]; then out+=" \"$a\""; else out+=" $a"; fi
  done
  echo "$out"
}

# measure NAME URL PIDS... -- wrk-args: one wrk run plus server CPU and machine CPU accounting.
measure() {
  local name="$1" url="$2"
  shift 2
  local pids=()
  while [ "$1" != "--" ]; do pids+=("$1"); shift; done
  shift
  local t0 m0 m1 t1
  t0="$(cpu_ticks "${pids[@]}")"
  read -r m0 mt0 <<<"$(machine_ticks)"
  run_wrk "$name" "$@" "$url" || { check_servers; exit 1; }
  check_servers
  t1="$(cpu_ticks "${pids[@]}")"
  read -r m1 mt1 <<<"$(machine_ticks)"
  local reqs_var="${name}_requests" secs_var="${name}_secs"
  # Server CPU per request (microseconds) and the machine's busy share during the run.
  printf -v "${name}_cpu_us" '%s' \
    "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${!reqs_var}" \
      'BEGIN { printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')"
  printf -v "${name}_srv_cores" '%s' \
    "$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="${!secs_var}" 'BEGIN { printf "%.2f", d / hz / s }')"
  printf -v "${name}_busy" '%s' \
    "$(awk -v b=$((m1 - m0)) -v t=$((mt1 - mt0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }')"
  CMDS+=("$(show_cmd "$@" "$url")")
}
CMDS=()

check_servers() {
  ensure_alive "$IG_PID" imagegate "$IG_STDERR"
  ensure_alive "$NGX_PID" nginx "$BENCH_TMP/nginx/logs/error.log"
}

warm() { wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "$AUTH" "$1" >/dev/null 2>&1; }

# --- 1. peak -----------------------------------------------------------------------------------
bench_log "warm-up ($WARMUP each)"
warm "$IG_URL"
warm "$NGX_URL"
check_servers

bench_log "peak: imagegate ($DURATION, $CONNS connections, $THREADS wrk thread(s))"
measure ig_peak "$IG_URL" "$IG_PID" -- "${WRK_COMMON[@]}" -s "$BENCH_TMP/report.lua"
bench_log "peak: nginx"
# shellcheck disable=SC2086
measure ngx_peak "$NGX_URL" "$NGX_PID" $NGX_WORKER_PIDS -- "${WRK_COMMON[@]}" -s "$BENCH_TMP/report.lua"

# --- 2. half of imagegate's peak rate ------------------------------------------------------------
TARGET_RPS=$((ig_peak_rps / 2))
# Each connection sends, waits for the reply, then sleeps delay() ms: rate ~ CONNS*1000/delay.
base_delay() { awk -v c="$CONNS" -v r="$1" 'BEGIN { printf "%.3f", c * 1000 / r }'; }

# paced NAME URL PIDS...: one measured run at TARGET_RPS. Each connection's period is the
# delay plus the service time, so the delay is first calibrated with short runs (up to 3 of
# BENCH_CALIBRATE): period observed = CONNS/achieved, period wanted = CONNS/target, and the
# difference comes off the delay (an additive correction: the service time does not scale
# with the delay).
paced() {
  local name="$1" url="$2"
  shift 2
  local delay rps_var="${name}_cal_rps" off
  delay="$(base_delay "$TARGET_RPS")"
  for attempt in 1 2 3; do
    BENCH_DELAY_MS="$delay"
    export BENCH_DELAY_MS
    run_wrk "${name}_cal" -t"$THREADS" -c"$CONNS" -d"$CALIBRATE" -H "$AUTH" \
      -s "$BENCH_TMP/paced.lua" "$url" || { check_servers; exit 1; }
    off="$(awk -v a="${!rps_var}" -v t="$TARGET_RPS" 'BEGIN { d = (a - t) / t; print ((d > 0.03 || d < -0.03) ? 1 : 0) }')"
    [ "$off" = 1 ] || break
    delay="$(awk -v d="$delay" -v a="${!rps_var}" -v t="$TARGET_RPS" -v c="$CONNS" \
      'BEGIN { n = d - (c / a - c / t) * 1000; if (n < 0.05) n = 0.05; printf "%.3f", n }')"
    bench_log "  calibration $attempt: ${!rps_var} req/s at target $TARGET_RPS -> delay $delay ms"
  done
  BENCH_DELAY_MS="$delay"
  export BENCH_DELAY_MS
  measure "$name" "$url" "$@" -- "${WRK_COMMON[@]}" -s "$BENCH_TMP/paced.lua"
  printf -v "${name}_delay" '%s' "$delay"
  # The command line as actually run (the delay travels in the environment).
  local last=$((${#CMDS[@]} - 1))
  CMDS[last]="BENCH_DELAY_MS=$delay ${CMDS[last]}"
}

bench_log "half rate: target $TARGET_RPS req/s (mean delay $(base_delay "$TARGET_RPS") ms per connection)"
paced ig_half "$IG_URL" "$IG_PID"
# shellcheck disable=SC2086
paced ngx_half "$NGX_URL" "$NGX_PID" $NGX_WORKER_PIDS

IG_HWM="$(vm_field "$IG_PID" VmHWM)"
IG_RSS_END="$(vm_field "$IG_PID" VmRSS)"
IG_THREADS="$(awk '$1 == "Threads:" {print $2}' "/proc/$IG_PID/status")"
IG_LOG_LINES="$(wc -l <"$IG_STDERR")"

# --- 3. extra: imagegate without access log ----------------------------------------------------
if [ "$NO_LOG_VARIANT" = 1 ]; then
  bench_log "extra: imagegate peak with [server] access_log = false"
  printf '[server]\naccess_log = false\n' >"$BENCH_TMP/nolog.toml"
  MAIN_IG_PID="$IG_PID" MAIN_IG_KEY="$IG_KEY"
  start_imagegate "$BENCH_TMP/ig-nolog" "$BENCH_TMP/nolog.toml"
  NOLOG_URL="http://127.0.0.1:$IG_PORT$URI"
  AUTH_NOLOG="Authorization: Bearer $IG_KEY"
  wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "$AUTH_NOLOG" "$NOLOG_URL" >/dev/null 2>&1
  measure ig_nolog "$NOLOG_URL" "$IG_PID" -- -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
    -H "$AUTH_NOLOG" -s "$BENCH_TMP/report.lua"
  CMDS[-1]="${CMDS[-1]}  # 2nd instance, its own key; config: [server] access_log = false"
  IG_PID="$MAIN_IG_PID" IG_KEY="$MAIN_IG_KEY"
fi

# --- report ------------------------------------------------------------------------------------
RATIO="$(awk -v a="$ig_peak_rps" -v b="$ngx_peak_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
ok_ratio="$(awk -v r="$RATIO" 'BEGIN { print ((r >= 0.5) ? "met" : "MISSED") }')"
ok_p99="$(awk -v p="$ig_half_p99" 'BEGIN { print ((p < 5) ? "met" : "MISSED") }')"

row() { # name label
  local n="$1" label="$2"
  local rps="${n}_rps" p50="${n}_p50" p90="${n}_p90" p99="${n}_p99" mx="${n}_max" err="${n}_errors"
  local cpu="${n}_cpu_us" cores="${n}_srv_cores" busy="${n}_busy"
  printf '%-34s %9s %8s %8s %8s %9s %6s %9s %7s %7s%%\n' "$label" "${!rps}" "${!p50}" "${!p90}" \
    "${!p99}" "${!mx}" "${!err}" "${!cpu}" "${!cores}" "${!busy}"
}

echo
echo "== GET $URI: imagegate vs nginx static file ($(date -u '+%Y-%m-%d %H:%M UTC')) =="
echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr);" \
  "wrk, imagegate and nginx share all cores"
echo "imagegate: build/release/imagegate ($(cd "$BENCH_REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "+ working tree; binary built $(date -u -r "$BENCH_REPO/build/release/imagegate" '+%Y-%m-%d %H:%M UTC')), io_threads=0 (=$(nproc)), $IG_THREADS threads, access log -> file"
echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //'), worker_processes ${NGINX_WORKERS:-auto}, access_log -> file"
echo "background CPU load before the run: ${BACKGROUND_BUSY}% of the machine$( [ "$BACKGROUND_BUSY" -gt 10 ] && echo ' -- WARNING: not idle, figures distorted')"
echo "reply: body $BODY_BYTES bytes; headers imagegate $IG_HDR_BYTES bytes, nginx $NGX_HDR_BYTES bytes"
echo "load: wrk -t$THREADS -c$CONNS -d$DURATION (after a $WARMUP warm-up); half rate = ${TARGET_RPS} req/s"
echo
printf '%-34s %9s %8s %8s %8s %9s %6s %9s %7s %8s\n' "run" "req/s" "p50 ms" "p90 ms" "p99 ms" \
  "max ms" "errors" "cpu us/req" "srv cores" "mach busy"
row ig_peak "peak      imagegate"
row ngx_peak "peak      nginx"
row ig_half "half rate imagegate"
row ngx_half "half rate nginx"
if [ "$NO_LOG_VARIANT" = 1 ]; then row ig_nolog "peak      imagegate (no access log)"; fi
echo
echo "ratio imagegate/nginx (peak req/s): $RATIO"
if [ "$NO_LOG_VARIANT" = 1 ]; then
  echo "ratio imagegate(no access log)/nginx: $(awk -v a="$ig_nolog_rps" -v b="$ngx_peak_rps" 'BEGIN { printf "%.2f", a / b }')"
fi
echo "imagegate memory: peak RSS under load (VmHWM) $IG_HWM; VmRSS after startup $IG_RSS_START," \
  "after the runs $IG_RSS_END; startup peak (argon2id bootstrap) $IG_HWM_STARTUP"
echo "imagegate access log: $IG_LOG_LINES lines written during the run"
echo "wrk CPU seconds: ig_peak ${ig_peak_wrkcpu}, ngx_peak ${ngx_peak_wrkcpu}, ig_half ${ig_half_wrkcpu}, ngx_half ${ngx_half_wrkcpu}"
echo
echo "targets:"
echo "  imagegate >= 0.5x nginx req/s at peak:  $RATIO x      -> $ok_ratio"
echo "  p99 < 5 ms at half peak (imagegate):    $ig_half_p99 ms  -> $ok_p99"
echo
echo "commands (KEY = the bootstrap key printed by imagegate on first start; wrk scripts below):"
for c in "${CMDS[@]}"; do echo "  $c"; done
echo "  report.lua: a done() hook printing requests, duration and latency percentiles"
echo "  paced.lua:  report.lua + delay() returning BENCH_DELAY_MS * U(0.5,1.5), stochastically rounded"
echo "  (both written by bench/lib.sh write_wrk_scripts)"
errors_total=$((ig_peak_errors + ngx_peak_errors + ig_half_errors + ngx_half_errors))
if [ "$errors_total" -gt 0 ]; then
  echo
  echo "WARNING: $errors_total non-2xx/socket errors during the runs; the figures are suspect."
fi
exit 0
