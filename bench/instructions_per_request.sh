#!/usr/bin/env bash
# Results live in variables named <run>_<field>, set through printf -v by run_wrk.
# shellcheck disable=SC2154
# Instructions per request, counted by valgrind (callgrind), for A/B decisions that the VM's
# speed drift would drown: on this 2-vCPU VM the same build's req/s moves +-20 % between runs
# ten seconds apart, while the user-space instruction count of a request moves well under 1 %.
#
#   bench/instructions_per_request.sh [BINARY...]     (default: build/release/imagegate)
#
# For each binary, under callgrind (every thread counted, kernel time not):
#   1. GET /v1/me                       (wrk, 4 connections)
#   2. async task creates, seed 002     (wrk, 4 connections, same server; the fake Kie upstream
#      never finishes a task and max_running is 1, so nothing but the creates runs)
#   3. sync image generations           (a second server, with the fake OpenAI upstream
#      answering a 1024x1024 PNG as b64_json; response_format url, as bench_images.sh)
# Counters are zeroed after a warm-up and dumped after each measurement; the count is divided
# by the requests wrk completed, in all and for the IO threads and the store's threads apart.
# Kernel work (system calls, TCP, fdatasync) is not in the figure, and 4 connections make
# smaller group commits than the throughput benchmarks, so the store's share is larger here:
# compare builds with it, not with bench_tasks.sh's CPU figures. The store threads' figure also
# holds work done per unit of time rather than per request (the checkpointer's rounds,
# condition-variable wake-ups), so it moves with the rate valgrind reached; the IO threads'
# figure is the steady one.
#
# Knobs: BENCH_IPR_SECONDS (10): length of each measurement (valgrind runs ~50x slower).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH="${BENCH_IPR_SECONDS:-10}"
bench_need_tools instructions_per_request wrk valgrind callgrind_control python3

bench_init ipr
BINARIES=("$@")
if [ "${#BINARIES[@]}" -eq 0 ]; then
  bench_need_release_build
  BINARIES=("$BENCH_REPO/build/release/imagegate")
fi
write_wrk_scripts
write_wrk_post_script "$BENCH_TMP/create.lua" \
  '{"model":"gpt-image-2","prompt":"bench","callback_url":"http://127.0.0.1:9/cb"}'

KIE_LOG="$BENCH_TMP/kie.log"
python3 "$BENCH_REPO/tests/fakes/fake_kie.py" --port 0 --delay-ms 3600000 \
  --api-key bench-kie-key >"$KIE_LOG" 2>&1 &
KIE_PID=$!
BENCH_PIDS+=("$KIE_PID")
wait_for_line "$KIE_LOG" 'fake-kie listening on ' "$KIE_PID" || { cat "$KIE_LOG" >&2; exit 1; }
KIE_PORT="$(sed -nE 's/^fake-kie listening on [0-9.]+:([0-9]+).*/\1/p' "$KIE_LOG" | head -1)"

start_fake_openai "$BENCH_TMP/fake"
IMAGES_CFG="$BENCH_TMP/images.toml"
cat >"$IMAGES_CFG" <<EOF
[bootstrap]
free_credits = "1000000"
[images]
default_response_format = "url"
[[providers]]
name = "fake"
type = "openai"
base_url = "http://127.0.0.1:$FAKE_PORT/v1"
api_key = "bench-openai-key"
[[models]]
id = "gpt-image-2"
channels = ["fake"]
EOF
write_wrk_post_script "$BENCH_TMP/image.lua" \
  '{"model":"gpt-image-2","prompt":"bench","size":"1024x1024","response_format":"url"}'

CFG="$BENCH_TMP/imagegate.toml"
cat >"$CFG" <<EOF
[bootstrap]
free_credits = "1000000"
[images]
allow_private_reference_urls = true
[tasks]
profile = "seed002"
max_running = 1
[[providers]]
name = "kie"
type = "kie"
base_url = "http://127.0.0.1:$KIE_PORT"
api_key = "bench-kie-key"
[[models]]
id = "gpt-image-2"
channels = ["kie"]
EOF

# measure NAME URL SCRIPT: prints "<requests> <Ir per request: all, IO threads, store threads>".
# With --separate-threads each thread dumps to its own file; a thread is told apart by the
# functions it ran (the HTTP session on IO threads; the SQLite writer, flusher and checkpointer).
measure() {
  local name="$1" url="$2" script="$3" out="$BENCH_TMP/cg.$IG_PID.out"
  run_wrk warm -t1 -c4 -d3s -H "Authorization: Bearer $IG_KEY" -s "$script" "$url"
  callgrind_control -z "$IG_PID" >/dev/null 2>&1
  run_wrk m -t1 -c4 -d"${SECONDS_EACH}s" -H "Authorization: Bearer $IG_KEY" -s "$script" "$url"
  rm -f "$out".*
  callgrind_control -d "$IG_PID" >/dev/null 2>&1
  sleep 2  # the dump is written by the server process, asynchronously
  if [ "$m_errors" != 0 ]; then
    bench_log "$name: $m_errors failed requests; the figure would not be comparable"
    return 1
  fi
  local all=0 io=0 store=0 f ir
  for f in "$out".*; do
    [ -f "$f" ] || continue
    ir="$(awk '/^totals:/ {print $2; exit}' "$f")"
    [ -n "$ir" ] || continue
    all=$((all + ir))
    if grep -q 'Server::Impl::session' "$f"; then
      io=$((io + ir))
    elif grep -qE 'SqlitePool::(writer_loop|flusher_loop|checkpointer_loop)' "$f"; then
      store=$((store + ir))
    fi
  done
  [ "$all" -gt 0 ] || { bench_log "no callgrind dump for $name"; return 1; }
  echo "$m_requests $((all / m_requests)) $((io / m_requests)) $((store / m_requests))"
}

# start_under_callgrind BINARY CONFIG: imagegate under callgrind, one thread per dump file.
start_under_callgrind() {
  IG_BIN="$1"
  IG_WRAPPER=(valgrind --tool=callgrind --separate-threads=yes
    --callgrind-out-file="$BENCH_TMP/cg.%p.out")
  BENCH_START_TIMEOUT=180 start_imagegate "$BENCH_TMP/ig.$RANDOM" "$2"
  unset IG_WRAPPER IG_BIN
}

stop_server() {
  kill -TERM "$IG_PID" 2>/dev/null || true
  wait "$IG_PID" 2>/dev/null || true
}

printf '%-28s %-8s %9s %12s %12s %12s\n' "binary" "request" "requests" "Ir all" "Ir IO" "Ir store"
for bin in "${BINARIES[@]}"; do
  label="$(basename "$(dirname "$bin")")/$(basename "$bin")"
  for what in me create image; do
    case "$what" in
      me)
        start_under_callgrind "$bin" "$CFG"
        result="$(measure me "http://127.0.0.1:$IG_PORT/v1/me" \
          "$BENCH_TMP/report.lua")" || result=""
        ;;
      create)
        result="$(measure create "http://127.0.0.1:$IG_PORT/api/v1/images/generations" \
          "$BENCH_TMP/create.lua")" || result=""
        stop_server
        ;;
      image)
        start_under_callgrind "$bin" "$IMAGES_CFG"
        result="$(measure image "http://127.0.0.1:$IG_PORT/v1/images/generations" \
          "$BENCH_TMP/image.lua")" || result=""
        stop_server
        ;;
    esac
    if [ -z "$result" ]; then
      bench_log "measuring $bin failed; BENCH_KEEP_TMP=1 keeps $BENCH_TMP"
      exit 1
    fi
    read -r n all io store <<<"$result"
    printf '%-28s %-8s %9s %12s %12s %12s\n' "$label" "$what" "$n" "$all" "$io" "$store"
  done
done
