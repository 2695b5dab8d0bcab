#!/usr/bin/env bash
# rovertchat benchmark harness: one command, everything measured on this machine.
#
#   bench/run.sh                      # full run (~8-9 min), writes BENCHMARKS.md (generated block)
#   DURATION=3 bench/run.sh           # quick smoke run (does not touch BENCHMARKS.md unless WRITE_BENCHMARKS=1)
#
# What it does (details in bench/README.md):
#   1. builds the release binaries (rovertchat, ollama-emulator) and bench/loadgen, copies them to $OUT_DIR/bin
#   2. start-up time on SQLite (fresh DATA_DIR, DATABASE_URL unset): spawn -> first 200 from /api/v1/health
#   3. drops and recreates the PostgreSQL database, starts the server (production logging, RATE_LIMITS=off),
#      seeds like run-bench.sh (bench_user, 50 chats) and runs the same wrk scenarios as run-bench.sh
#   4. /users/me at a low connection count, idle and during a login flood
#   5. pgbench with the server's SQL for /users/me and POST message (same clients, same duration): the ceiling
#   6. time to first token, through rovertchat vs directly against the emulator
#   6b. the OpenAI-compatible API (bench/openai.sh): TTFT through /v1/chat/completions, GET /v1/models vs /users/me
#   6c. what routing costs (bench/routing.sh): /v1 added TTFT with one provider and with three, on both databases
#   7. 1,000 concurrent SSE completions at 20 tokens/s: server CPU, peak RSS, answers stored
#   8. worst-case request bodies (bench/bodies.sh): 16 at once on each route, peak RSS against 300 MB
#   9. search over SEARCH_MESSAGES messages (p50/p99), NDJSON export MB/s and RSS, import of a ChatGPT
#      file of 1,000 conversations (bench/search.sh), on PostgreSQL and on SQLite
#  9b. several replicas on one PostgreSQL (bench/replicas.sh): two replicas against one on the same cores
#      (/users/me, POST message), and the delay of each token to a watcher on the other replica
#  10. optional: pool-size sweep, perf profile of the server
# Server CPU/RSS come from /proc (bench/loadgen monitor), sampled every 100 ms.
#
# Environment (defaults):
#   DURATION=20 WARMUP=3 COOLDOWN=3 CONNS=32 THREADS=2 TIMEOUT=10s     wrk, as run-bench.sh
#   LOGIN_DURATION=10 LOGIN_CONNS=8                                    login scenario, as run-bench.sh
#   LOW_CONNS=4 FLOOD_CONNS=8                                          /users/me idle vs during a login flood
#   POOL=4                           DATABASE_MAX_CONNECTIONS of the server (the default on 2 cores)
#   POOL_SWEEP="4 16 32"             extra pool sizes tried on /users/me and POST message ("" = skip)
#   SWEEP_DURATION=10
#   TTFT_N=200 STREAMS=1000 STREAM_TOKENS=20 STREAM_TOKEN_DELAY_MS=50 STARTUP_RUNS=11
#   BODIES_PARALLEL=16               worst-case bodies sent at once on each route (8 MiB each)
#   SEARCH_BACKENDS="postgres sqlite" SEARCH_MESSAGES=1000000 SEARCH_USER_MESSAGES=100000
#                                    search/export/import step (bench/search.sh; "" = skip)
#   OPENAI=1 OPENAI_DURATION=10 OPENAI_ROUNDS=2   the /v1 step (0 skips): wrk seconds per run, /users/me + /v1/models rounds
#   ROUTING=1 ROUTING_ROUNDS=3                     the routing step (0 skips): rounds of one vs three providers
#   REPLICAS=1 REPLICAS_DURATION=10 REPLICAS_ROUNDS=2 REPLICAS_N=10
#                                    the replicas step (0 skips): wrk seconds per run, rounds of one vs two replicas,
#                                    generations watched across replicas (200 tokens, 20 ms apart)
#   PERF=1                           perf profile of the server under /users/me and POST message (if perf exists)
#   MALLOC_DIAG=0                    1: also run the login scenario with glibc's mmap threshold fixed at 1 MiB (GLIBC_TUNABLES)
#   NODELAY_DIAG=0                   1: also measure TTFT with TCP_NODELAY forced on by an LD_PRELOAD shim (needs cc)
#   PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres BENCH_DB=rovertchat_bench
#   PG_URL_PARAMS=""                 appended to DATABASE_URL, e.g. "?sslmode=disable" (pgbench/psql get PGSSLMODE too)
#   PORT=18080 EMU_PORT=18434 EMU_STREAM_PORT=18435 STARTUP_PORT=18090
#   SKIP_BUILD=0  WAIT_FOR_RUSTC=180 (seconds to wait while another rustc is running)
#   OUT_DIR=bench/out/<UTC timestamp>   raw outputs
#   WRITE_BENCHMARKS=1 when DURATION=20 (the default), else 0: write the generated block of BENCHMARKS.md
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
export BENCH_LUA_DIR="$HERE/lua"

DURATION="${DURATION:-20}"; WARMUP="${WARMUP:-3}"; COOLDOWN="${COOLDOWN:-3}"
CONNS="${CONNS:-32}"; THREADS="${THREADS:-2}"; TIMEOUT="${TIMEOUT:-10s}"
LOGIN_DURATION="${LOGIN_DURATION:-$(( DURATION < 10 ? DURATION : 10 ))}"; LOGIN_CONNS="${LOGIN_CONNS:-8}"
LOW_CONNS="${LOW_CONNS:-4}"; FLOOD_CONNS="${FLOOD_CONNS:-8}"
POOL="${POOL:-4}"; POOL_SWEEP="${POOL_SWEEP-10 32}"; SWEEP_DURATION="${SWEEP_DURATION:-$(( DURATION < 10 ? DURATION : 10 ))}"
TTFT_N="${TTFT_N:-200}"; STREAMS="${STREAMS:-1000}"; STREAM_TOKENS="${STREAM_TOKENS:-20}"
STREAM_TOKEN_DELAY_MS="${STREAM_TOKEN_DELAY_MS:-50}"; STARTUP_RUNS="${STARTUP_RUNS:-11}"
BODIES_PARALLEL="${BODIES_PARALLEL:-16}"
SEARCH_BACKENDS="${SEARCH_BACKENDS-postgres sqlite}"
SEARCH_MESSAGES="${SEARCH_MESSAGES:-1000000}"; SEARCH_USER_MESSAGES="${SEARCH_USER_MESSAGES:-100000}"
OPENAI="${OPENAI:-1}"; OPENAI_DURATION="${OPENAI_DURATION:-$(( DURATION < 10 ? DURATION : 10 ))}"; OPENAI_ROUNDS="${OPENAI_ROUNDS:-2}"
ROUTING="${ROUTING:-1}"; ROUTING_ROUNDS="${ROUTING_ROUNDS:-3}"
REPLICAS="${REPLICAS:-1}"; REPLICAS_DURATION="${REPLICAS_DURATION:-$(( DURATION < 10 ? DURATION : 10 ))}"
REPLICAS_ROUNDS="${REPLICAS_ROUNDS:-2}"; REPLICAS_N="${REPLICAS_N:-10}"
PERF="${PERF:-1}"; NODELAY_DIAG="${NODELAY_DIAG:-0}"; MALLOC_DIAG="${MALLOC_DIAG:-0}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
BENCH_DB="${BENCH_DB:-rovertchat_bench}"; PG_URL_PARAMS="${PG_URL_PARAMS:-}"
PORT="${PORT:-18080}"; EMU_PORT="${EMU_PORT:-18434}"; EMU_STREAM_PORT="${EMU_STREAM_PORT:-18435}"
STARTUP_PORT="${STARTUP_PORT:-18090}"
SKIP_BUILD="${SKIP_BUILD:-0}"; WAIT_FOR_RUSTC="${WAIT_FOR_RUSTC:-180}"
if [ -z "${WRITE_BENCHMARKS:-}" ]; then WRITE_BENCHMARKS=$([ "$DURATION" = 20 ] && echo 1 || echo 0); fi
export BENCH_USER="${BENCH_USER:-bench_user}" BENCH_PASS="${BENCH_PASS:-Bench-pass-2024!}"
N_CHATS="${N_CHATS:-50}"
OUT_DIR="${OUT_DIR:-$HERE/out/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT_DIR"; OUT_DIR="$(cd "$OUT_DIR" && pwd)"
BIN="$OUT_DIR/bin"; mkdir -p "$BIN"
BASE="http://127.0.0.1:$PORT"; API="$BASE/api/v1"
LOADGEN="$BIN/loadgen"
case "$PG_URL_PARAMS" in *sslmode=disable*) export PGSSLMODE=disable ;; esac

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
declare -A M=()          # every figure, "scenario.key" -> value
metric() { M["$1"]="$2"; printf '%s=%s\n' "$1" "$2" >> "$OUT_DIR/metrics.txt"; }
get() { echo "${M[$1]:-n/a}"; }
# kv FILE KEY: value of KEY in the RESULT line of FILE
kv() { grep -h '^RESULT' "$1" 2>/dev/null | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
calc() { awk "BEGIN { x = $1; if (x != x) print \"n/a\"; else printf \"${2:-%.2f}\", x }" 2>/dev/null || echo n/a; }
: > "$OUT_DIR/metrics.txt"

# ---- processes we start (and only those) are stopped on exit ----------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites ----------------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true
[ "$(ulimit -n)" -ge 4096 ] || log "warning: ulimit -n is $(ulimit -n); 1,000 streams need about 2,100 descriptors"
if ! command -v wrk >/dev/null; then
  log "installing wrk (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
for tool in wrk pgbench psql createdb dropdb curl cargo; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done
psql -d postgres -Atc 'select 1' >/dev/null || { echo "bench: PostgreSQL at $PGHOST:$PGPORT is not reachable as $PGUSER" >&2; exit 1; }

{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "loadavg_start=$(cat /proc/loadavg)"
  echo "cpus=$(nproc)"
  echo "cpu_model=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "mem=$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "git=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' + uncommitted changes in src/')"
  echo "postgres=$(psql -d postgres -Atc 'show server_version')"
  echo "wrk=$(wrk --version 2>&1 | head -1 | awk '{print $2}')"
  echo "pgbench=$(pgbench --version)"
  echo "command=$(printf '%q ' "$0" "$@")"
  for v in DURATION WARMUP COOLDOWN CONNS THREADS LOGIN_DURATION LOGIN_CONNS LOW_CONNS FLOOD_CONNS POOL POOL_SWEEP SWEEP_DURATION TTFT_N STREAMS STREAM_TOKENS STREAM_TOKEN_DELAY_MS STARTUP_RUNS BODIES_PARALLEL OPENAI OPENAI_DURATION OPENAI_ROUNDS ROUTING ROUTING_ROUNDS REPLICAS REPLICAS_DURATION REPLICAS_ROUNDS REPLICAS_N PG_URL_PARAMS; do
    echo "$v=${!v}"
  done
} > "$OUT_DIR/run-info.txt"
log "output: $OUT_DIR"
log "load average at start: $(cat /proc/loadavg)"

# ---- build --------------------------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
  log "building release binaries (first build takes several minutes: lto=fat)"
  (cd "$ROOT" && cargo build --release -p rovertchat -p ollama-emulator) >"$OUT_DIR/build.log" 2>&1 \
    || { tail -30 "$OUT_DIR/build.log" >&2; echo "bench: build failed, see $OUT_DIR/build.log" >&2; exit 1; }
  cargo build --release --manifest-path "$HERE/loadgen/Cargo.toml" >>"$OUT_DIR/build.log" 2>&1 \
    || { tail -30 "$OUT_DIR/build.log" >&2; echo "bench: loadgen build failed" >&2; exit 1; }
fi
# Copies: another build in the repo cannot swap the binaries in the middle of a run.
cp "${ROVERTCHAT_BIN:-$ROOT/target/release/rovertchat}" "$BIN/rovertchat"
cp "${EMULATOR_BIN:-$ROOT/target/release/ollama-emulator}" "$BIN/ollama-emulator"
cp "$HERE/loadgen/target/release/loadgen" "$LOADGEN"
SHIM=""
if [ "$NODELAY_DIAG" = 1 ] && command -v cc >/dev/null; then
  cc -shared -fPIC -O2 -o "$BIN/nodelay_shim.so" "$HERE/tools/nodelay_shim.c" -ldl && SHIM="$BIN/nodelay_shim.so"
fi

# ---- the machine is shared: wait (a while) for someone else's compile to end ---------------------
waited=0
while pgrep -x rustc >/dev/null && [ "$waited" -lt "$WAIT_FOR_RUSTC" ]; do
  [ "$waited" = 0 ] && log "another rustc is running; waiting up to ${WAIT_FOR_RUSTC}s before measuring"
  sleep 5; waited=$((waited + 5))
done
rustc_note="no compiler running at the start of the measurements"
if pgrep -x rustc >/dev/null; then rustc_note="a rustc was still running after waiting ${waited}s: figures may be disturbed"
elif [ "$waited" -gt 0 ]; then rustc_note="waited ${waited}s for another engineer's rustc to finish"; fi
echo "rustc_wait=$rustc_note" >> "$OUT_DIR/run-info.txt"
echo "loadavg_measure=$(cat /proc/loadavg)" >> "$OUT_DIR/run-info.txt"
log "$rustc_note; load average now $(cat /proc/loadavg)"

# ---- helpers: emulator, server -----------------------------------------------------------------
wait_http() {  # url, seconds
  local i=0
  until curl -sf -o /dev/null "$1"; do
    i=$((i + 1)); [ "$i" -lt $(( $2 * 50 )) ] || return 1; sleep 0.02
  done
}
EMU_STARTED=""
start_emulator() {  # port, extra flags...   (pid in $EMU_STARTED)
  local port=$1; shift
  "$BIN/ollama-emulator" --port "$port" --quiet "$@" >"$OUT_DIR/emulator-$port.log" 2>&1 &
  EMU_STARTED=$!; PIDS+=("$EMU_STARTED")
  wait_http "http://127.0.0.1:$port/api/version" 10 || { echo "bench: emulator on $port did not start" >&2; exit 1; }
}
JWT_A="bench-access-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
JWT_R="bench-refresh-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SERVER_PID=""
start_server() {  # name, emulator port, pool, [LD_PRELOAD], [GLIBC_TUNABLES]
  local name=$1 emu=$2 pool=$3 preload=${4:-} tunables=${5:-}
  local dir="$OUT_DIR/server-$name"; mkdir -p "$dir"
  # Providers outlive a server in its database: each server answers from its own emulator only.
  if [ "${SERVER_BACKEND:-postgres}" = postgres ]; then
    psql -q -d "$BENCH_DB" -c "DELETE FROM model_providers WHERE api_url <> 'http://127.0.0.1:$emu'" 2>/dev/null || true
  fi
  # cwd = a scratch dir, so no stray .env is read
  (cd "$dir" && exec env ${preload:+LD_PRELOAD=$preload} ${tunables:+GLIBC_TUNABLES=$tunables} \
      $([ "${SERVER_BACKEND:-postgres}" = postgres ] && echo "DATABASE_URL=postgres://$PGUSER@$PGHOST:$PGPORT/$BENCH_DB$PG_URL_PARAMS") \
      HOST=127.0.0.1 PORT="$PORT" ENVIRONMENT=production LOG_LEVEL=warn RATE_LIMITS=off \
      GENERATIONS_PER_USER=100000 \
      JWT_SECRET_KEY="$JWT_A" JWT_REFRESH_SECRET_KEY="$JWT_R" \
      OLLAMA_BASE_URL="http://127.0.0.1:$emu" DATABASE_MAX_CONNECTIONS="$pool" \
      DATA_DIR="$dir/data" LOG_DIR="$dir/logs" \
      "$BIN/rovertchat") >"$dir/stdout.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_http "$API/health" 30 || { tail -20 "$dir/stdout.log" >&2; echo "bench: server ($name) did not start" >&2; exit 1; }
}
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pg_pids() {  # backends of the bench database and PostgreSQL's own processes
  psql -d "$BENCH_DB" -Atc "select string_agg(pid::text, ',') from pg_stat_activity
     where pid <> pg_backend_pid() and (datname = '$BENCH_DB' or backend_type <> 'client backend')"
}
register_login() {  # user -> prints the access token
  local user=$1 jar="$OUT_DIR/cookies-$1.txt"
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"$user\",\"email\":\"$user@example.com\",\"password\":\"$BENCH_PASS\"}" "$API/auth/register"
  curl -s -o /dev/null -c "$jar" --data-urlencode "username=$user" --data-urlencode "password=$BENCH_PASS" "$API/auth/login"
  awk '$6=="access_token"{print $7}' "$jar" | tail -1
}

# ---- one load run: warm-up, cool-down, measured run with /proc monitoring -----------------------
# record NAME CONNS DURATION KIND OUTFILE -- command...   (KIND: wrk or pgbench)
measure() {
  local name=$1 conns=$2 dur=$3 kind=$4; shift 5
  "$@" >"$OUT_DIR/$name.txt" 2>&1 &
  local lpid=$!
  sleep 1
  local pg; pg=$(pg_pids)
  local skip=1 window; window=$(calc "$dur - 3" "%.1f")
  "$LOADGEN" monitor --group "server=$SERVER_PID" --group "pg=$pg" --group "load=$lpid" \
    --skip-s "$skip" --window-s "$window" --while-pid "$lpid" --rss-out "$OUT_DIR/$name.rss" >"$OUT_DIR/$name.monitor" 2>&1 &
  local mpid=$!
  wait "$lpid" || true
  wait "$mpid" || true
  local mon="$OUT_DIR/$name.monitor"
  metric "$name.conns" "$conns"
  metric "$name.duration" "$dur"
  for k in server_cores pg_cores load_cores other_cores sys_busy_cores server_rss_max_mib server_threads_max; do
    metric "$name.$k" "$(kv "$mon" "$k")"
  done
  if [ "$kind" = wrk ]; then
    local f="$OUT_DIR/$name.txt"
    [ -n "$(kv "$f" rps)" ] || { log "$name: wrk gave no RESULT line (see $f)"; return 0; }
    metric "$name.rps" "$(kv "$f" rps)"; metric "$name.requests" "$(kv "$f" requests)"
    metric "$name.p50_ms" "$(kv "$f" p50_ms)"; metric "$name.p99_ms" "$(kv "$f" p99_ms)"
    metric "$name.errors" "$(( $(kv "$f" err_connect) + $(kv "$f" err_read) + $(kv "$f" err_write) + $(kv "$f" err_timeout) + $(kv "$f" status_ge_400) ))"
    log "$name: $(get "$name.rps") req/s p50 $(get "$name.p50_ms") ms p99 $(get "$name.p99_ms") ms errors $(get "$name.errors") RSS $(get "$name.server_rss_max_mib") MiB | cores server $(get "$name.server_cores") pg $(get "$name.pg_cores") load $(get "$name.load_cores") other $(get "$name.other_cores")"
  fi
}
wrk_run() {  # name conns duration script url [threads]
  local name=$1 conns=$2 dur=$3 script=$4 url=$5 threads=${6:-$THREADS}
  [ "$threads" -le "$conns" ] || threads=$conns
  if [ "$WARMUP" != 0 ]; then
    wrk -t"$threads" -c"$conns" -d"${WARMUP}s" --timeout "$TIMEOUT" -s "$script" "$url" >"$OUT_DIR/$name.warmup.txt" 2>&1 || true
    sleep "$COOLDOWN"
  fi
  echo "wrk -t$threads -c$conns -d${dur}s --timeout $TIMEOUT --latency -s ${script#"$ROOT/"} $url" >>"$OUT_DIR/commands.txt"
  measure "$name" "$conns" "$dur" wrk - wrk -t"$threads" -c"$conns" -d"${dur}s" --timeout "$TIMEOUT" --latency -s "$script" "$url"
}
pgbench_run() {  # name clients duration script [warmup=1]
  local name=$1 clients=$2 dur=$3 script=$4 warm=${5:-1}
  local threads=$(( clients < THREADS ? clients : THREADS ))
  local args=(-n -M prepared -c "$clients" -j "$threads" -D "uid=$USER_ID" -D "cid=$CHAT_ID" -f "$script" "$BENCH_DB")
  if [ "$warm" = 1 ] && [ "$WARMUP" != 0 ]; then
    pgbench "${args[@]}" -T "$WARMUP" >"$OUT_DIR/$name.warmup.txt" 2>&1 || true
    sleep "$COOLDOWN"
  fi
  rm -f "$OUT_DIR/pgbench_log_$name".*
  echo "pgbench ${args[*]} -T $dur -l" >>"$OUT_DIR/commands.txt"
  measure "$name" "$clients" "$dur" pgbench - \
    pgbench "${args[@]}" -T "$dur" -l --log-prefix="$OUT_DIR/pgbench_log_$name"
  local tps; tps=$(awk '/^tps = /{print $3}' "$OUT_DIR/$name.txt")
  "$LOADGEN" pglog "$OUT_DIR/pgbench_log_$name".* >"$OUT_DIR/$name.lat" 2>&1 || true
  metric "$name.rps" "$(calc "${tps:-0}" "%.1f")"
  metric "$name.p50_ms" "$(kv "$OUT_DIR/$name.lat" p50_ms)"; metric "$name.p99_ms" "$(kv "$OUT_DIR/$name.lat" p99_ms)"
  metric "$name.errors" "$(awk '/number of failed transactions/{print $5}' "$OUT_DIR/$name.txt")"
  metric "$name.server_rss_max_mib" "-"
  log "$name: $(get "$name.rps") tps p50 $(get "$name.p50_ms") ms p99 $(get "$name.p99_ms") ms | cores pg $(get "$name.pg_cores") pgbench $(get "$name.load_cores") other $(get "$name.other_cores")"
  rm -f "$OUT_DIR/pgbench_log_$name".*
}
perf_profile() {  # name wrk-args...: 10 s of load with the server under perf record
  local name=$1; shift
  command -v perf >/dev/null && [ "$PERF" = 1 ] || return 0
  wrk "$@" >"$OUT_DIR/perf_$name.wrk.txt" 2>&1 &
  local w=$!
  sleep 1
  perf record -F 499 -g -p "$SERVER_PID" -o "$OUT_DIR/perf_$name.data" -- sleep 8 >/dev/null 2>&1 || true
  wait "$w" || true
  perf report -i "$OUT_DIR/perf_$name.data" --no-children --sort dso --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -12 >"$OUT_DIR/perf_$name.dso.txt" || true
  perf report -i "$OUT_DIR/perf_$name.data" --no-children --sort sym --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -30 >"$OUT_DIR/perf_$name.sym.txt" || true
  log "perf profile of $name written to $OUT_DIR/perf_$name.{dso,sym}.txt"
}

# =================================================================================================
# 1. start-up time on SQLite
log "start-up on SQLite: $STARTUP_RUNS runs"
"$LOADGEN" startup --bin "$BIN/rovertchat" --runs "$STARTUP_RUNS" --port "$STARTUP_PORT" \
  --workdir "$OUT_DIR/startup" >"$OUT_DIR/startup.txt" 2>"$OUT_DIR/startup.log" \
  || { cat "$OUT_DIR/startup.log" >&2; exit 1; }
for k in median_ms min_ms max_ms all_ms rss_ready_mib rss_idle_mib; do metric "startup.$k" "$(kv "$OUT_DIR/startup.txt" "$k")"; done
log "start-up: median $(get startup.median_ms) ms (all: $(get startup.all_ms)); RSS idle on SQLite $(get startup.rss_idle_mib) MiB"

# 2. argon2 ceiling for logins
"$LOADGEN" argon2 --threads "$(nproc)" --seconds 3 >"$OUT_DIR/argon2.txt"
metric "argon2.t1_ms_each" "$(kv "$OUT_DIR/argon2.txt" t1_ms_each)"
metric "argon2.ceiling_per_s" "$(kv "$OUT_DIR/argon2.txt" "t$(nproc)_per_s")"
log "argon2id verify: $(get argon2.t1_ms_each) ms each; $(get argon2.ceiling_per_s)/s on $(nproc) threads"

# 3. PostgreSQL: fresh database, server, seed
log "recreating database $BENCH_DB"
dropdb --if-exists -f "$BENCH_DB" 2>/dev/null || dropdb --if-exists "$BENCH_DB"
createdb "$BENCH_DB"
start_emulator "$EMU_PORT" --first-token-delay-ms 0 --token-delay-ms 0 --tokens 5; EMU_PID=$EMU_STARTED
start_server main "$EMU_PORT" "$POOL"
sleep 1
metric "idle.rss_start_mib" "$(calc "$(rss_kib "$SERVER_PID") / 1024" "%.1f")"
log "server up (pid $SERVER_PID, pool $POOL); idle RSS $(get idle.rss_start_mib) MiB"

TOKEN=$(register_login "$BENCH_USER"); export TOKEN
[ -n "$TOKEN" ] || { echo "bench: login as $BENCH_USER gave no token" >&2; exit 1; }
AUTH=(-H "Cookie: access_token=$TOKEN")
USER_ID=$(curl -s "${AUTH[@]}" "$API/users/me" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
total=$(curl -s "${AUTH[@]}" "$API/chats/my?include_archived=true&limit=1" | grep -o '"total":[0-9]*' | cut -d: -f2 || true)
total=${total:-0}
while [ "$total" -lt "$N_CHATS" ]; do
  curl -sf -o /dev/null "${AUTH[@]}" -H 'Content-Type: application/json' \
    -d "{\"title\":\"bench chat $((total + 1))\"}" "$API/chats/my"
  total=$((total + 1))
done
CHAT_ID=$(curl -s "${AUTH[@]}" "$API/chats/my?limit=1" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
export CHAT_ID
[ -n "$USER_ID" ] && [ -n "$CHAT_ID" ] || { echo "bench: seeding failed" >&2; exit 1; }
log "seeded: $BENCH_USER ($USER_ID) with $total chats; messages go to $CHAT_ID"
sleep 2
metric "idle.rss_seeded_mib" "$(calc "$(rss_kib "$SERVER_PID") / 1024" "%.1f")"

# 4. the wrk scenarios of run-bench.sh
wrk_run health "$CONNS" "$DURATION" "$HERE/lua/get.lua" "$API/health"
wrk_run users_me "$CONNS" "$DURATION" "$HERE/lua/get.lua" "$API/users/me"
wrk_run chats_my "$CONNS" "$DURATION" "$HERE/lua/get.lua" "$API/chats/my"
wrk_run post_message "$CONNS" "$DURATION" "$HERE/lua/post_message.lua" "$BASE"
wrk_run login "$LOGIN_CONNS" "$LOGIN_DURATION" "$HERE/lua/login.lua" "$BASE"

# 5. /users/me at a low connection count: idle, then during a login flood
wrk_run users_me_low "$LOW_CONNS" "$DURATION" "$HERE/lua/get.lua" "$API/users/me" 1
flood_len=$(( WARMUP + COOLDOWN + DURATION + 6 ))
echo "wrk -t1 -c$FLOOD_CONNS -d${flood_len}s --timeout $TIMEOUT --latency -s bench/lua/login.lua $BASE   # login flood, background" >>"$OUT_DIR/commands.txt"
wrk -t1 -c"$FLOOD_CONNS" -d"${flood_len}s" --timeout "$TIMEOUT" --latency -s "$HERE/lua/login.lua" "$BASE" >"$OUT_DIR/login_flood.txt" 2>&1 &
FLOOD_PID=$!; PIDS+=("$FLOOD_PID")
sleep 2
wrk_run users_me_low_flood "$LOW_CONNS" "$DURATION" "$HERE/lua/get.lua" "$API/users/me" 1
wait "$FLOOD_PID" || true
metric "login_flood.rps" "$(kv "$OUT_DIR/login_flood.txt" rps)"
metric "login_flood.p99_ms" "$(kv "$OUT_DIR/login_flood.txt" p99_ms)"
log "login flood: $(get login_flood.rps) logins/s"

# 6. pgbench: the same SQL, the same database, the same clients and duration
pgbench_run pgbench_users_me "$CONNS" "$DURATION" "$HERE/pgbench/users_me.sql"
pgbench_run pgbench_post_message "$CONNS" "$DURATION" "$HERE/pgbench/post_message.sql"
# one client: the latency floor of the SQL itself
pgbench_run pgbench_post_message_c1 1 5 "$HERE/pgbench/post_message.sql" 0
sleep 2
metric "idle.rss_after_load_mib" "$(calc "$(rss_kib "$SERVER_PID") / 1024" "%.1f")"

# 7. perf profiles (not part of the figures above)
perf_profile users_me -t"$THREADS" -c"$CONNS" -d10s -s "$HERE/lua/get.lua" "$API/users/me"
perf_profile post_message -t"$THREADS" -c"$CONNS" -d10s -s "$HERE/lua/post_message.lua" "$BASE"

# 8. time to first token (emulator: no delays, 5 tokens)
TTFT_TOKEN=$(register_login ttft_user)
log "time to first token: $TTFT_N requests each way"
"$LOADGEN" ttft --server "$BASE" --emulator "http://127.0.0.1:$EMU_PORT" --token "$TTFT_TOKEN" \
  -n "$TTFT_N" --csv "$OUT_DIR/ttft.csv" >"$OUT_DIR/ttft.txt" 2>"$OUT_DIR/ttft.log" || cat "$OUT_DIR/ttft.log" >&2
for k in direct_p50_ms direct_p99_ms server_p50_ms server_p99_ms added_p50_ms added_p99_ms paired_diff_p50_ms paired_diff_p99_ms errors n; do
  metric "ttft.$k" "$(kv "$OUT_DIR/ttft.txt" "$k")"
done
log "TTFT direct p50/p99 $(get ttft.direct_p50_ms)/$(get ttft.direct_p99_ms) ms; through rovertchat $(get ttft.server_p50_ms)/$(get ttft.server_p99_ms) ms; added $(get ttft.added_p50_ms)/$(get ttft.added_p99_ms) ms"

# 8b. the OpenAI-compatible API, same server and emulator: TTFT through /v1/chat/completions,
#     GET /v1/models (API key) against GET /users/me (session) in turn
if [ "$OPENAI" = 1 ]; then
  log "OpenAI-compatible API (bench/openai.sh): $TTFT_N streamed completions each way, $OPENAI_ROUNDS x (/users/me, /v1/models) for $OPENAI_DURATION s"
  echo "BASE=$BASE EMULATOR=http://127.0.0.1:$EMU_PORT SERVER_PID=<server> TTFT_N=$TTFT_N DURATION=$OPENAI_DURATION WARMUP=$WARMUP COOLDOWN=$COOLDOWN ROUNDS=$OPENAI_ROUNDS CONNS=$CONNS bench/openai.sh" >>"$OUT_DIR/commands.txt"
  BASE="$BASE" EMULATOR="http://127.0.0.1:$EMU_PORT" LOADGEN="$LOADGEN" OUT_DIR="$OUT_DIR" SERVER_PID="$SERVER_PID"     TTFT_N="$TTFT_N" DURATION="$OPENAI_DURATION" WARMUP="$WARMUP" COOLDOWN="$COOLDOWN" CONNS="$CONNS" THREADS="$THREADS"     TIMEOUT="$TIMEOUT" ROUNDS="$OPENAI_ROUNDS" "$HERE/openai.sh" >"$OUT_DIR/openai.txt" 2>"$OUT_DIR/openai.log"     || cat "$OUT_DIR/openai.log" >&2
  for k in ttft_n ttft_errors ttft_direct_p50_ms ttft_direct_p99_ms ttft_server_p50_ms ttft_server_p99_ms ttft_added_p50_ms \
           ttft_added_p99_ms ttft_paired_diff_p50_ms ttft_paired_diff_p99_ms ttft_met users_me_rps users_me_rps_runs \
           users_me_p50_ms_runs users_me_p99_ms_runs users_me_errors users_me_server_cores_runs users_me_other_cores_runs \
           models_rps models_rps_runs models_p50_ms_runs models_p99_ms_runs models_errors models_server_cores_runs \
           models_other_cores_runs models_vs_users_me models_met; do
    metric "openai.$k" "$(kv "$OUT_DIR/openai.txt" "$k")"
  done
  log "/v1: added TTFT p50/p99 $(get openai.ttft_added_p50_ms)/$(get openai.ttft_added_p99_ms) ms (target p50 < 1 ms: $(get openai.ttft_met)); GET /v1/models $(get openai.models_rps) req/s vs /users/me $(get openai.users_me_rps) (met: $(get openai.models_met))"
fi
stop_server

# 8c. what routing costs: /v1 added TTFT with one provider and with three (own servers, emulators
#     and database), on both databases
if [ "$ROUTING" = 1 ]; then
  log "routing (bench/routing.sh): $ROUTING_ROUNDS rounds of one vs three providers, $TTFT_N requests each, PostgreSQL and SQLite"
  echo "BIN=<bin> TTFT_N=$TTFT_N ROUNDS=$ROUTING_ROUNDS bench/routing.sh" >>"$OUT_DIR/commands.txt"
  BIN="$BIN" LOADGEN="$LOADGEN" OUT_DIR="$OUT_DIR/routing" TTFT_N="$TTFT_N" ROUNDS="$ROUTING_ROUNDS" ROUTING_DB="${BENCH_DB}_routing" \
    "$HERE/routing.sh" >"$OUT_DIR/routing.txt" 2>"$OUT_DIR/routing.log" || cat "$OUT_DIR/routing.log" >&2
  for k in postgres_one_added_p50_ms postgres_three_added_p50_ms postgres_routing_p50_ms \
           sqlite_one_added_p50_ms sqlite_three_added_p50_ms sqlite_routing_p50_ms routing_met; do
    metric "routing.$k" "$(kv "$OUT_DIR/routing.txt" "$k")"
  done
  log "routing: three providers minus one, added TTFT p50: PostgreSQL $(get routing.postgres_routing_p50_ms) ms, SQLite $(get routing.sqlite_routing_p50_ms) ms (target < 0.1 ms: $(get routing.routing_met))"
fi

if [ -n "$SHIM" ]; then
  start_server nodelay "$EMU_PORT" "$POOL" "$SHIM"
  "$LOADGEN" ttft --server "$BASE" --emulator "http://127.0.0.1:$EMU_PORT" --token "$TTFT_TOKEN" \
    -n "$TTFT_N" --csv "$OUT_DIR/ttft_nodelay.csv" >"$OUT_DIR/ttft_nodelay.txt" 2>"$OUT_DIR/ttft_nodelay.log" || true
  for k in direct_p50_ms direct_p99_ms server_p50_ms server_p99_ms added_p50_ms added_p99_ms errors; do
    metric "ttft_nodelay.$k" "$(kv "$OUT_DIR/ttft_nodelay.txt" "$k")"
  done
  log "TTFT with TCP_NODELAY forced on (LD_PRELOAD shim): added $(get ttft_nodelay.added_p50_ms)/$(get ttft_nodelay.added_p99_ms) ms"
  stop_server
fi

if [ "$MALLOC_DIAG" = 1 ]; then
  start_server malloc "$EMU_PORT" "$POOL" "" glibc.malloc.mmap_threshold=1048576
  wrk_run login_mmap_threshold "$LOGIN_CONNS" "$LOGIN_DURATION" "$HERE/lua/login.lua" "$BASE"
  stop_server
fi

# 9. 1,000 concurrent streams at 20 tokens/s, on a freshly started server
start_emulator "$EMU_STREAM_PORT" --token-delay-ms "$STREAM_TOKEN_DELAY_MS" --tokens "$STREAM_TOKENS"; EMU2_PID=$EMU_STARTED
start_server streams "$EMU_STREAM_PORT" "$POOL"
STREAM_TOKEN=$(register_login stream_user)
sleep 1
log "$STREAMS concurrent streams ($STREAM_TOKENS tokens at ${STREAM_TOKEN_DELAY_MS} ms each)"
"$LOADGEN" streams --server "$BASE" --token "$STREAM_TOKEN" -n "$STREAMS" --expect-deltas "$STREAM_TOKENS" \
  --pid "$SERVER_PID" --emulator-pid "$EMU2_PID" --rss-out "$OUT_DIR/streams.rss" \
  --chat-ids-out "$OUT_DIR/streams.chats" >"$OUT_DIR/streams.txt" 2>"$OUT_DIR/streams.log" || cat "$OUT_DIR/streams.log" >&2
for k in n ok errors http_errors incomplete wrong_deltas wall_s server_cpu_s server_cores emulator_cpu_s sys_busy_cores \
         rss_before_mib rss_max_mib rss_after_mib first_token_p50_ms first_token_p99_ms total_p50_ms total_p99_ms total_max_ms; do
  metric "streams.$k" "$(kv "$OUT_DIR/streams.txt" "$k")"
done
sleep 1
read -r stored stored_chats < <(psql -d "$BENCH_DB" -At -F ' ' -c "select count(*), count(distinct m.chat_id) from messages m
  join chats c on c.id = m.chat_id join users u on u.id = c.user_id where u.username = 'stream_user' and m.role = 'assistant'")
metric "streams.stored" "$stored"; metric "streams.stored_chats" "$stored_chats"
log "streams: ok $(get streams.ok)/$STREAMS, wall $(get streams.wall_s) s, server CPU $(get streams.server_cpu_s) s ($(get streams.server_cores) cores), RSS max $(get streams.rss_max_mib) MiB, stored $stored in $stored_chats chats"
stop_server

# 10. worst-case request bodies on a freshly started server: its peak RSS (VmHWM) against 300 MB
start_server bodies "$EMU_PORT" "$POOL"
log "worst-case bodies: $BODIES_PARALLEL at once (8 MiB each, half chunked) on each of 5 routes"
echo "API=$API SERVER_PID=<server> PARALLEL=$BODIES_PARALLEL bench/bodies.sh" >>"$OUT_DIR/commands.txt"
API="$API" SERVER_PID="$SERVER_PID" OUT_DIR="$OUT_DIR" PARALLEL="$BODIES_PARALLEL" "$HERE/bodies.sh" \
  >"$OUT_DIR/bodies.txt" 2>"$OUT_DIR/bodies.log" || cat "$OUT_DIR/bodies.log" >&2
for k in rss_before_mib peak_rss_mib peak_rss_mb limit_mb met unexpected register login settings messages completions; do
  metric "bodies.$k" "$(kv "$OUT_DIR/bodies.txt" "$k")"
done
log "bodies: peak RSS $(get bodies.peak_rss_mib) MiB = $(get bodies.peak_rss_mb) MB (limit $(get bodies.limit_mb) MB: met $(get bodies.met)); unexpected answers $(get bodies.unexpected)"
stop_server

# 11. search, export and import at scale (bench/search.sh), on PostgreSQL and on SQLite, each on a
#     fresh server and an empty database
for backend in $SEARCH_BACKENDS; do
  if [ "$backend" = postgres ]; then
    dropdb --if-exists -f "${BENCH_DB}_search" 2>/dev/null || dropdb --if-exists "${BENCH_DB}_search"
    createdb "${BENCH_DB}_search"
    BENCH_DB="${BENCH_DB}_search" start_server search-postgres "$EMU_PORT" "$POOL"
  else
    SERVER_BACKEND=sqlite start_server search-sqlite "$EMU_PORT" "$POOL"
  fi
  log "search: $SEARCH_MESSAGES messages ($SEARCH_USER_MESSAGES of one user) on $backend; export; ChatGPT import"
  echo "API=$API SERVER_PID=<server> BACKEND=$backend MESSAGES=$SEARCH_MESSAGES USER_MESSAGES=$SEARCH_USER_MESSAGES bench/search.sh" >>"$OUT_DIR/commands.txt"
  API="$API" SERVER_PID="$SERVER_PID" OUT_DIR="$OUT_DIR" BACKEND="$backend" PG_DB="${BENCH_DB}_search" \
    SQLITE_DB="$OUT_DIR/server-search-sqlite/data/rovertchat.db" MESSAGES="$SEARCH_MESSAGES" USER_MESSAGES="$SEARCH_USER_MESSAGES" \
    "$HERE/search.sh" >"$OUT_DIR/search-$backend.txt" 2>"$OUT_DIR/search-$backend.log" || cat "$OUT_DIR/search-$backend.log" >&2
  for k in messages user_messages load_s errors search_p50_ms search_p99_ms p99_rank3_ms p99_rank100_ms p99_rank3000_ms \
           p99_rank18000_ms p99_prefix_ms p99_phrase_ms export_mb export_s export_mb_s rss_before_export_mib \
           rss_peak_export_mib import_conversations import_messages import_status import_s imported import_again_s skipped; do
    metric "search_$backend.$k" "$(kv "$OUT_DIR/search-$backend.txt" "$k")"
  done
  log "search on $backend: p50 $(get "search_$backend.search_p50_ms") ms, p99 $(get "search_$backend.search_p99_ms") ms" \
      "(rank 3 $(get "search_$backend.p99_rank3_ms"), rank 18000 $(get "search_$backend.p99_rank18000_ms"));" \
      "export $(get "search_$backend.export_mb_s") MB/s (RSS $(get "search_$backend.rss_before_export_mib") -> $(get "search_$backend.rss_peak_export_mib") MiB);" \
      "import of $(get "search_$backend.import_conversations") conversations $(get "search_$backend.import_s") s"
  stop_server
done

# 11b. several replicas on one PostgreSQL (bench/replicas.sh): its own database, emulator and two
#      servers on other ports; two replicas against one, and the re-attach latency across them
if [ "$REPLICAS" = 1 ]; then
  log "replicas (bench/replicas.sh): $REPLICAS_ROUNDS x (/users/me, POST message) on one and two replicas, $REPLICAS_DURATION s each; $REPLICAS_N generations watched across replicas"
  echo "BIN_DIR=<bin> DB=${BENCH_DB}_replicas POOL=$POOL DURATION=$REPLICAS_DURATION WARMUP=$WARMUP COOLDOWN=$COOLDOWN ROUNDS=$REPLICAS_ROUNDS CONNS=$CONNS THREADS=$THREADS REATTACH_N=$REPLICAS_N bench/replicas.sh" >>"$OUT_DIR/commands.txt"
  BIN_DIR="$BIN" LOADGEN="$LOADGEN" OUT_DIR="$OUT_DIR" DB="${BENCH_DB}_replicas" PG_URL_PARAMS="$PG_URL_PARAMS" POOL="$POOL" \
    DURATION="$REPLICAS_DURATION" WARMUP="$WARMUP" COOLDOWN="$COOLDOWN" ROUNDS="$REPLICAS_ROUNDS" CONNS="$CONNS" THREADS="$THREADS" \
    TIMEOUT="$TIMEOUT" REATTACH_N="$REPLICAS_N" WAIT_FOR_RUSTC="$WAIT_FOR_RUSTC" "$HERE/replicas.sh" >"$OUT_DIR/replicas.txt" 2>"$OUT_DIR/replicas.log" \
    || cat "$OUT_DIR/replicas.log" >&2
  for k in users_me_one_rps users_me_one_rps_runs users_me_two_rps users_me_two_rps_runs users_me_one_p99_ms_runs \
           users_me_two_p99_ms_runs users_me_one_other_cores_runs users_me_two_other_cores_runs users_me_ratio users_me_met \
           post_message_one_rps post_message_one_rps_runs post_message_two_rps post_message_two_rps_runs \
           post_message_one_p99_ms_runs post_message_two_p99_ms_runs post_message_one_other_cores_runs \
           post_message_two_other_cores_runs post_message_ratio post_message_met users_me_one_errors users_me_two_errors \
           post_message_one_errors post_message_two_errors reattach_n reattach_errors reattach_tokens reattach_p50_ms \
           reattach_p90_ms reattach_p99_ms reattach_max_ms reattach_catchup_p50_ms reattach_catchup_max_ms \
           reattach_within_target_pct reattach_met reattach_token_delay_ms reattach_tokens_each stuck_running server_warnings rustc_running_at_start loadavg_start loadavg_end; do
    metric "replicas.$k" "$(kv "$OUT_DIR/replicas.txt" "$k")"
  done
  log "replicas: /users/me two/one $(get replicas.users_me_ratio) ($(get replicas.users_me_two_rps) vs $(get replicas.users_me_one_rps) req/s), POST message $(get replicas.post_message_ratio); re-attach token delay p50/p99/max $(get replicas.reattach_p50_ms)/$(get replicas.reattach_p99_ms)/$(get replicas.reattach_max_ms) ms"
fi

# 12. pool-size sweep (optional)
SWEPT=()
for pool in $POOL_SWEEP; do
  [ "$pool" = "$POOL" ] && continue
  start_server "pool$pool" "$EMU_PORT" "$pool"
  saved_warmup=$WARMUP; WARMUP=2; COOLDOWN_SAVED=$COOLDOWN; COOLDOWN=1
  wrk_run "sweep${pool}_users_me" "$CONNS" "$SWEEP_DURATION" "$HERE/lua/get.lua" "$API/users/me"
  wrk_run "sweep${pool}_post_message" "$CONNS" "$SWEEP_DURATION" "$HERE/lua/post_message.lua" "$BASE"
  WARMUP=$saved_warmup; COOLDOWN=$COOLDOWN_SAVED
  stop_server
  SWEPT+=("$pool")
done
kill -TERM "$EMU_PID" "$EMU2_PID" 2>/dev/null || true
# A request cancelled by its client while sqlx's BEGIN is in flight leaves the pooled connection
# inside a transaction (PostgreSQL then warns at the next BEGIN on it): count what the server logged.
metric "correctness.tx_warnings" "$(cat "$OUT_DIR"/server-*/stdout.log 2>/dev/null | grep -c 'already a transaction in progress' || true)"
metric "correctness.tx_warning_lines" "$(grep -l 'already a transaction in progress' "$OUT_DIR"/server-*/stdout.log 2>/dev/null | sed "s#$OUT_DIR/##" | tr '\n' ' ')"
echo "loadavg_end=$(cat /proc/loadavg)" >> "$OUT_DIR/run-info.txt"

# =================================================================================================
# report
. "$HERE/report.sh"
write_report "$OUT_DIR/BENCHMARKS.generated.md"
log "report: $OUT_DIR/BENCHMARKS.generated.md"
if [ "$WRITE_BENCHMARKS" = 1 ]; then
  update_benchmarks_md "$ROOT/BENCHMARKS.md" "$OUT_DIR/BENCHMARKS.generated.md"
  log "updated the generated block of $ROOT/BENCHMARKS.md"
fi
cat "$OUT_DIR/BENCHMARKS.generated.md"
