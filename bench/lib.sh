# shellcheck shell=bash
# Shared helpers for bench/*.sh (source it; it does not run anything by itself).
#
# Everything stays on 127.0.0.1, in a private temp directory, as the invoking user: nginx gets
# its own prefix/config/pid/logs there and never reads /etc/nginx; imagegate gets a fresh data
# dir. bench_init installs an EXIT trap that stops every process started through these helpers.
#
# Provided:
#   bench_init NAME            temp dir in $BENCH_TMP, cleanup trap, repo paths
#   bench_need_tools NAME TOOL...  exits with an install hint when a tool is missing
#   bench_need_release_build   builds build/release/imagegate if missing (waits for other builds)
#   free_port                  prints a free 127.0.0.1 TCP port
#   start_imagegate DIR [CONFIG]   sets IG_PID IG_PORT IG_KEY IG_STDOUT IG_STDERR
#   start_nginx_static DIR URI FILE  sets NGX_PID NGX_PORT (serves FILE at URI as JSON)
#   write_wrk_scripts          writes $BENCH_TMP/report.lua and $BENCH_TMP/paced.lua
#   run_wrk OUTVAR ARGS...     runs wrk with report.lua/paced.lua output, parses it
#   cpu_ticks PID...           utime+stime clock ticks of the processes (all threads)
#   vm_field PID FIELD         e.g. vm_field $IG_PID VmHWM -> "12345 kB"

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_PIDS=()
BENCH_TMP=""

bench_log() { printf '[bench] %s\n' "$*" >&2; }

# bench_need_tools NAME TOOL...: exits with a hint when one of the tools is not installed.
bench_need_tools() {
  local name="$1" tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$name: '$tool' not found (scripts/install-deps.sh bench)" >&2
      exit 1
    }
  done
}

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    # Give each process a moment to drain, then insist.
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BENCH_PIDS=()
  if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ] && [ -z "${BENCH_KEEP_TMP:-}" ]; then
    rm -rf "$BENCH_TMP"
  elif [ -n "$BENCH_TMP" ]; then
    bench_log "kept $BENCH_TMP"
  fi
}

bench_init() {
  local name="$1"
  BENCH_TMP="$(mktemp -d "/tmp/imagegate-bench-${name}.XXXXXX")"
  # Traversable but not listable: nginx workers may run as another user (when started by root)
  # and need to reach their www/ subdirectory; secrets stay in 0700 subdirectories.
  chmod 711 "$BENCH_TMP"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_need_release_build() {
  local bin="$BENCH_REPO/build/release/imagegate"
  [ -x "$bin" ] && return 0
  while pgrep -f ninja >/dev/null 2>&1; do
    bench_log "another build is running; waiting for it to finish"
    sleep 15
  done
  [ -x "$bin" ] && return 0
  bench_log "building the release binary (several minutes on 2 cores)"
  (cd "$BENCH_REPO" && cmake --preset release >/dev/null && cmake --build --preset release -j2)
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# Waits (up to ~15 s) until FILE contains a line matching REGEX.
wait_for_line() {
  local file="$1" regex="$2" pid="${3:-}"
  # BENCH_START_TIMEOUT (seconds, default 15): longer for a server started under valgrind.
  for _ in $(seq 1 "$((${BENCH_START_TIMEOUT:-15} * 10))"); do
    grep -qE "$regex" "$file" 2>/dev/null && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# start_imagegate DATA_DIR [CONFIG_FILE]: a fresh imagegate on 127.0.0.1:<ephemeral port>.
# Parses the port and the bootstrap API key from its stdout. Access log (stderr) goes to a file.
start_imagegate() {
  local data="$1" config="${2:-}"
  mkdir -p "$data" && chmod 700 "$data"
  IG_STDOUT="$data/stdout.log"
  IG_STDERR="$data/stderr.log"
  local args=()
  [ -n "$config" ] && args+=(--config "$config")
  # IG_WRAPPER: an array of words run in front of the binary (e.g. valgrind and its options).
  IMAGEGATE_DATA_DIR="$data" IMAGEGATE_LISTEN=127.0.0.1:0 \
    ${IG_WRAPPER[@]+"${IG_WRAPPER[@]}"} "${IG_BIN:-$BENCH_REPO/build/release/imagegate}" \
    "${args[@]}" serve >"$IG_STDOUT" 2>"$IG_STDERR" &
  IG_PID=$!
  BENCH_PIDS+=("$IG_PID")
  if ! wait_for_line "$IG_STDOUT" 'imagegate listening on http://' "$IG_PID"; then
    bench_log "imagegate did not start; stdout/stderr:"
    cat "$IG_STDOUT" "$IG_STDERR" >&2
    return 1
  fi
  IG_PORT="$(sed -nE 's#^imagegate listening on http://[^ ]*:([0-9]+) .*#\1#p' "$IG_STDOUT" | head -1)"
  IG_KEY="$(sed -nE 's#^ *API key: +(sk-[A-Za-z0-9_-]+).*#\1#p' "$IG_STDOUT" | head -1)"
  if [ -z "$IG_PORT" ] || [ -z "$IG_KEY" ]; then
    bench_log "could not parse port/key from imagegate stdout:"
    cat "$IG_STDOUT" >&2
    return 1
  fi
}

# start_nginx_static DIR URI FILE: nginx (own prefix, config, pid, logs under DIR; foreground,
# worker_processes ${NGINX_WORKERS:-auto}) answering URI with FILE's bytes as application/json.
start_nginx_static() {
  local dir="$1" uri="$2" file="$3"
  mkdir -p "$dir/www" "$dir/logs" "$dir/tmp"
  chmod 755 "$dir" "$dir/www"
  cp "$file" "$dir/www/body.json"
  chmod 644 "$dir/www/body.json"
  NGX_PORT="$(free_port)"
  cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes ${NGINX_WORKERS:-auto};
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    # An access log line per request, like imagegate's (unbuffered writes, nginx's default).
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$NGX_PORT;
        root $dir/www;
        location = $uri {
            default_type application/json;
            try_files /body.json =404;
        }
    }
}
EOF
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -t -q || return 1
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" &
  NGX_PID=$!
  BENCH_PIDS+=("$NGX_PID")
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$NGX_PORT$uri" 2>/dev/null && return 0
    kill -0 "$NGX_PID" 2>/dev/null || break
    sleep 0.1
  done
  bench_log "nginx did not start:"
  cat "$dir/logs/error.log" >&2
  return 1
}

# report.lua: prints one machine-readable line at the end (latency in microseconds).
# paced.lua: the same, plus a delay() hook pacing each connection at BENCH_DELAY_MS on average
# (uniform jitter +-50% so connections do not fire in lockstep, stochastic rounding because
# wrk's timers have millisecond resolution).
write_wrk_scripts() {
  cat >"$BENCH_TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f " ..
    "mean_us=%.1f non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write,
    e.timeout))
end
EOF
  {
    cat <<'EOF'
local mean_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
delay = function()
  local d = mean_ms * (0.5 + math.random())
  return math.floor(d + math.random())
end
EOF
    cat "$BENCH_TMP/report.lua"
  } >"$BENCH_TMP/paced.lua"
}

# run_wrk PREFIX wrk-args...: runs wrk, keeps its full output in $BENCH_TMP/PREFIX.wrk, and sets
# PREFIX_rps PREFIX_p50 PREFIX_p99 (ms) PREFIX_errors PREFIX_requests.
run_wrk() {
  local prefix="$1"
  shift
  local out="$BENCH_TMP/$prefix.wrk"
  local TIMEFORMAT='%U %S' rc=0
  { time wrk "$@" >"$out" 2>&1 || rc=$?; } 2>"$out.time"
  [ "$rc" -eq 0 ] || { bench_log "wrk failed:"; cat "$out" >&2; return 1; }
  printf -v "${prefix}_wrkcpu" '%s' "$(awk '{printf "%.2f", $1 + $2}' "$out.time")"
  local line
  line="$(grep '^WRK_RESULT' "$out" | tail -1)"
  [ -n "$line" ] || { bench_log "no WRK_RESULT in wrk output:"; cat "$out" >&2; return 1; }
  local kv
  kv="$(awk '{
      for (i = 2; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
      errors = v["non2xx"] + v["connect"] + v["read"] + v["write"] + v["timeout"]
      printf "%.0f %.3f %.3f %.3f %d %d %.3f %.3f\n", v["requests"] / (v["duration_us"] / 1e6),
             v["p50_us"] / 1000, v["p99_us"] / 1000, v["p90_us"] / 1000, errors, v["requests"],
             v["max_us"] / 1000, v["duration_us"] / 1e6
    }' <<<"$line")"
  local rps p50 p99 p90 errors requests max secs
  read -r rps p50 p99 p90 errors requests max secs <<<"$kv"
  printf -v "${prefix}_secs" '%s' "$secs"
  printf -v "${prefix}_rps" '%s' "$rps"
  printf -v "${prefix}_p50" '%s' "$p50"
  printf -v "${prefix}_p90" '%s' "$p90"
  printf -v "${prefix}_p99" '%s' "$p99"
  printf -v "${prefix}_max" '%s' "$max"
  printf -v "${prefix}_errors" '%s' "$errors"
  printf -v "${prefix}_requests" '%s' "$requests"
}

# Sum of utime+stime (clock ticks) of the given processes, all threads included.
cpu_ticks() {
  local total=0 pid f
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    # Fields after the ")" of the command name: utime is the 12th, stime the 13th.
    f="$(sed -E 's/^.*\) //' "/proc/$pid/stat")"
    total=$((total + $(awk '{print $12 + $13}' <<<"$f")))
  done
  echo "$total"
}

# Aggregate CPU counters of the machine: "busy_ticks total_ticks" (from /proc/stat).
machine_ticks() {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# Percentage of the machine's CPU busy over SECONDS (sampled before starting anything, to warn
# when other work would distort the figures).
machine_busy_pct() {
  local b0 t0 b1 t1
  read -r b0 t0 <<<"$(machine_ticks)"
  sleep "${1:-2}"
  read -r b1 t1 <<<"$(machine_ticks)"
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * b / t : 0) }'
}

vm_field() {
  awk -v k="$2:" '$1 == k {print $2, $3}' "/proc/$1/status" 2>/dev/null
}

# Fails loudly (keeping the temp dir with the logs) when a server under test has died.
ensure_alive() {
  local pid="$1" what="$2" log="${3:-}"
  kill -0 "$pid" 2>/dev/null && return 0
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  bench_log "$what (pid $pid) died during the benchmark (exit status $rc)${log:+; tail of $log:}"
  [ -n "$log" ] && tail -5 "$log" >&2
  BENCH_KEEP_TMP=1
  exit 1
}

# Children of a process (e.g. nginx workers).
child_pids() { pgrep -P "$1" 2>/dev/null | tr '\n' ' '; }

# --- helpers added for bench/bench_images.sh ---------------------------------------------------
#   start_fake_openai DIR [ARGS...]       sets FAKE_PID FAKE_PORT (tests/fakes/fake_openai.py)
#   fake_control JSON                     POST /_control to the fake (mode, delay_ms, noisy...)
#   start_nginx_proxy DIR UPSTREAM_PORT   sets NGX_PID NGX_PORT (proxy_pass, upstream keepalive)
#   write_wrk_post_script FILE BODY       wrk Lua: POST BODY as JSON + report.lua's done()
#   stop_bench_pid PID                    TERM (then KILL) one process started by these helpers
#   reset_hwm PID                         resets VmHWM to the current RSS (clear_refs 5)

# start_fake_openai DIR [ARGS...]: the fake OpenAI Images upstream on 127.0.0.1:<free port>.
start_fake_openai() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  FAKE_LOG="$dir/fake.log"
  python3 "$BENCH_REPO/tests/fakes/fake_openai.py" --port 0 "$@" >"$FAKE_LOG" 2>&1 &
  FAKE_PID=$!
  BENCH_PIDS+=("$FAKE_PID")
  if ! wait_for_line "$FAKE_LOG" 'fake-openai listening on ' "$FAKE_PID"; then
    bench_log "fake upstream did not start:"
    cat "$FAKE_LOG" >&2
    return 1
  fi
  FAKE_PORT="$(sed -nE 's/^fake-openai listening on [0-9.]+:([0-9]+).*/\1/p' "$FAKE_LOG" | head -1)"
}

fake_control() {
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' --data "$1" \
    "http://127.0.0.1:$FAKE_PORT/_control"
}

# start_nginx_proxy DIR UPSTREAM_PORT: nginx (own prefix under DIR) reverse-proxying everything
# to 127.0.0.1:UPSTREAM_PORT over HTTP/1.1 with a keep-alive upstream pool.
start_nginx_proxy() {
  local dir="$1" up="$2"
  mkdir -p "$dir/logs" "$dir/tmp"
  chmod 755 "$dir"
  NGX_PORT="$(free_port)"
  cat >"$dir/nginx.conf" <<EOF2
daemon off;
master_process on;
worker_processes ${NGINX_WORKERS:-auto};
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_max_body_size 64m;
    upstream fake_upstream {
        server 127.0.0.1:$up;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://fake_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffers 64 16k;
            proxy_read_timeout 600s;
        }
    }
}
EOF2
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -t -q || return 1
  nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" &
  NGX_PID=$!
  BENCH_PIDS+=("$NGX_PID")
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$NGX_PORT/_stats" 2>/dev/null && return 0
    kill -0 "$NGX_PID" 2>/dev/null || break
    sleep 0.1
  done
  bench_log "nginx did not start:"
  cat "$dir/logs/error.log" >&2
  return 1
}

# write_wrk_post_script FILE BODY: every request is POST BODY (application/json); prints the
# same WRK_RESULT line as report.lua (write_wrk_scripts must have run first).
write_wrk_post_script() {
  local file="$1" body="$2"
  {
    printf 'wrk.method = "POST"\n'
    printf 'wrk.headers["Content-Type"] = "application/json"\n'
    printf 'wrk.body = [[%s]]\n' "$body"
    cat "$BENCH_TMP/report.lua"
  } >"$file"
}

stop_bench_pid() {
  local pid="$1" p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null; }
