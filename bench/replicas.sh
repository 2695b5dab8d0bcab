#!/usr/bin/env bash
# Several replicas on one PostgreSQL (issue #15): throughput of two replicas against one on the
# same cores, and how fast a token reaches a watcher on another replica.
#
#   BIN_DIR=target/release LOADGEN=bench/loadgen/target/release/loadgen OUT_DIR=<dir> bench/replicas.sh
#
# Called by bench/run.sh (step 12, `REPLICAS=0` skips it) with the binaries it copied; runs alone
# too, after `cargo build --release -p rovertchat -p ollama-emulator` and the loadgen build. It
# starts everything itself and stops only what it started: the database DB is dropped and
# created again, then an ollama-emulator (`--token-delay-ms REATTACH_TOKEN_DELAY_MS --tokens
# REATTACH_TOKENS`; the wrk scenarios do not reach it) and replica A on PORT_A; replica B
# (PORT_B) is started and stopped as the rounds need it. Both replicas run the release binary
# with the environment of bench/run.sh's servers (ENVIRONMENT=production LOG_LEVEL=warn
# RATE_LIMITS=off, DATABASE_MAX_CONNECTIONS=POOL each, the same JWT secrets) on the same
# database, on the same cores: two processes, each with its own runtime (one worker thread per
# core), pool and LISTEN connection.
#
# 1. Throughput, ROUNDS rounds; each round runs both scenarios with one replica (B stopped) and
#    with two (B started), the order alternating between rounds:
#      one: wrk -tTHREADS -cCONNS against A;
#      two: wrk cannot spread one run over two hosts, so two wrk processes run at once, one per
#           replica, each with half the threads and connections (-t THREADS/2 -c CONNS/2); their
#           req/s are added (what a round-robin proxy in front would see, without the proxy's
#           own cost on these cores).
#    Scenarios: GET /api/v1/users/me (lua/get.lua) and POST /api/v1/chats/{id}/messages
#    (lua/post_message.lua, one chat, as in run.sh), each DURATION s after a WARMUP s warm-up
#    and a COOLDOWN s pause. Target: two replicas lose at most 10% (two/one >= 0.9).
# 2. Re-attach latency (`loadgen reattach-latency`), A and B running: REATTACH_N generations one
#    after the other (plus one unrecorded), each started on A (POST /chats/{id}/completions); once
#    A's stream has had REATTACH_ATTACH_AFTER deltas, GET /chats/{id}/generation on B. For every
#    token A's stream receives after B's answer began: the time until B's stream holds it (one
#    client process, one clock). Target: within 250 ms.
# Then: no generation left `running` in the database, and the warnings both replicas logged.
#
# Prints one line: RESULT users_me_one_rps=.. users_me_two_rps=.. users_me_ratio=.. users_me_met=yes|no
#   post_message_one_rps=.. post_message_two_rps=.. post_message_ratio=.. post_message_met=..
#   (+ _runs, p50/p99 and cores per round) reattach_p50_ms=.. reattach_p99_ms=.. reattach_max_ms=.. reattach_met=..
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
LOADGEN="${LOADGEN:-$HERE/loadgen/target/release/loadgen}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
DB="${DB:-rovertchat_bench_replicas}"; PG_URL_PARAMS="${PG_URL_PARAMS:-}"
PORT_A="${PORT_A:-18180}"; PORT_B="${PORT_B:-18181}"; EMU_PORT="${EMU_PORT:-18436}"
POOL="${POOL:-4}"
DURATION="${DURATION:-10}"; WARMUP="${WARMUP:-3}"; COOLDOWN="${COOLDOWN:-3}"; ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-32}"; THREADS="${THREADS:-2}"; TIMEOUT="${TIMEOUT:-10s}"
REATTACH_N="${REATTACH_N:-10}"; REATTACH_TOKENS="${REATTACH_TOKENS:-200}"
REATTACH_TOKEN_DELAY_MS="${REATTACH_TOKEN_DELAY_MS:-20}"; REATTACH_ATTACH_AFTER="${REATTACH_ATTACH_AFTER:-20}"
PASSWORD="${REPLICAS_PASS:-Bench-pass-2024!}"
WAIT_FOR_RUSTC="${WAIT_FOR_RUSTC:-180}"   # seconds to wait while someone else's rustc runs (shared machine)
export BENCH_LUA_DIR="$HERE/lua"
dir="$OUT_DIR/replicas"; mkdir -p "$dir"
case "$PG_URL_PARAMS" in *sslmode=disable*) export PGSSLMODE=disable ;; esac

for f in "$BIN_DIR/rovertchat" "$BIN_DIR/ollama-emulator" "$LOADGEN"; do
  [ -x "$f" ] || { echo "replicas: no $f (build the release binaries and bench/loadgen first)" >&2; exit 1; }
done
for tool in wrk curl psql createdb dropdb; do command -v "$tool" >/dev/null || { echo "replicas: $tool is required" >&2; exit 1; }; done
[ $(( CONNS % 2 )) = 0 ] && [ "$THREADS" -ge 2 ] && [ $(( THREADS % 2 )) = 0 ] \
  || { echo "replicas: CONNS and THREADS must be even (split between the two replicas)" >&2; exit 1; }
log() { echo "[replicas $(date +%H:%M:%S)] $*" >&2; }
kv() { grep -h '^RESULT' "$1" 2>/dev/null | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
# socket errors + HTTP >= 400 of a wrk output; a run without a RESULT line counts as one error
wrk_errors() {
  local f=$1 k sum=0 v
  [ -n "$(kv "$f" rps)" ] || { echo 1; return; }
  for k in err_connect err_read err_write err_timeout status_ge_400; do v=$(kv "$f" "$k"); sum=$(( sum + ${v:-0} )); done
  echo "$sum"
}

# ---- processes this script starts (and only those) are stopped on exit ----------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_http() {  # url seconds
  local i=0
  until curl -sf -o /dev/null "$1"; do i=$((i + 1)); [ "$i" -lt $(( $2 * 50 )) ] || return 1; sleep 0.02; done
}
JWT_A="bench-access-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
JWT_R="bench-refresh-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
STARTED=""
start_replica() {  # name port -> pid in $STARTED
  local name=$1 port=$2 d="$dir/server-$1"; mkdir -p "$d"
  (cd "$d" && exec env DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB$PG_URL_PARAMS" \
      HOST=127.0.0.1 PORT="$port" ENVIRONMENT=production LOG_LEVEL=warn RATE_LIMITS=off \
      GENERATIONS_PER_USER=100000 JWT_SECRET_KEY="$JWT_A" JWT_REFRESH_SECRET_KEY="$JWT_R" \
      OLLAMA_BASE_URL="http://127.0.0.1:$EMU_PORT" DATABASE_MAX_CONNECTIONS="$POOL" \
      DATA_DIR="$d/data" LOG_DIR="$d/logs" "$BIN_DIR/rovertchat") >>"$d/stdout.log" 2>&1 &
  STARTED=$!; PIDS+=("$STARTED")
  wait_http "http://127.0.0.1:$port/api/v1/health" 30 || { tail -20 "$d/stdout.log" >&2; echo "replicas: replica $name did not start" >&2; exit 1; }
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
pg_pids() {
  psql -d "$DB" -Atc "select string_agg(pid::text, ',') from pg_stat_activity
     where pid <> pg_backend_pid() and (datname = '$DB' or backend_type <> 'client backend')"
}
login() {  # base user -> access token
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"$2\",\"email\":\"$2@example.com\",\"password\":\"$PASSWORD\"}" "$1/api/v1/auth/register"
  curl -s --data-urlencode "username=$2" --data-urlencode "password=$PASSWORD" "$1/api/v1/auth/login" \
    | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4
}

# ---- the machine is shared: wait (a while) for someone else's compile to end ---------------------------
waited=0
while pgrep -x rustc >/dev/null && [ "$waited" -lt "$WAIT_FOR_RUSTC" ]; do
  [ "$waited" = 0 ] && log "another rustc is running; waiting up to ${WAIT_FOR_RUSTC}s before measuring"
  sleep 5; waited=$((waited + 5))
done
rustc_running=$(pgrep -x rustc >/dev/null && echo yes || echo no)
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)

# ---- database, emulator, replica A, seed ------------------------------------------------------------
dropdb --if-exists -f "$DB" 2>/dev/null || dropdb --if-exists "$DB"
createdb "$DB"
"$BIN_DIR/ollama-emulator" --port "$EMU_PORT" --quiet --token-delay-ms "$REATTACH_TOKEN_DELAY_MS" --tokens "$REATTACH_TOKENS" \
  >"$dir/emulator.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$EMU_PORT/api/version" 10 || { echo "replicas: the emulator did not start" >&2; exit 1; }
A_URL="http://127.0.0.1:$PORT_A"; B_URL="http://127.0.0.1:$PORT_B"
start_replica a "$PORT_A"; A_PID=$STARTED; B_PID=""
TOKEN=$(login "$A_URL" replicas_user); export TOKEN
[ -n "$TOKEN" ] || { echo "replicas: login failed" >&2; exit 1; }
CHAT_ID=$(curl -s -H "Cookie: access_token=$TOKEN" -H 'Content-Type: application/json' -d '{"title":"replicas bench"}' \
  "$A_URL/api/v1/chats/my" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
export CHAT_ID
[ -n "$CHAT_ID" ] || { echo "replicas: creating a chat failed" >&2; exit 1; }

# ---- 1. throughput: one replica against two ---------------------------------------------------------
# run NAME SCRIPT PATH one|two: warm-up, pause, measured run(s) with /proc monitoring
run() {
  local name=$1 script=$2 path=$3 mode=$4 out="$dir/$1"
  local urls=("$A_URL$path") t=$THREADS c=$CONNS servers=$A_PID
  if [ "$mode" = two ]; then urls=("$A_URL$path" "$B_URL$path"); t=$(( THREADS / 2 )); c=$(( CONNS / 2 )); servers="$A_PID,$B_PID"; fi
  local i url wpids=()
  if [ "$WARMUP" != 0 ]; then
    for url in "${urls[@]}"; do wrk -t"$t" -c"$c" -d"${WARMUP}s" --timeout "$TIMEOUT" -s "$script" "$url" >/dev/null 2>&1 & wpids+=("$!"); done
    for i in "${wpids[@]}"; do wait "$i" || true; done
    sleep "$COOLDOWN"; wpids=()
  fi
  i=0
  for url in "${urls[@]}"; do
    i=$((i + 1))
    echo "wrk -t$t -c$c -d${DURATION}s --timeout $TIMEOUT --latency -s bench/lua/${script##*/} $url   # $name, $mode replica(s)" >>"$dir/commands.txt"
    wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout "$TIMEOUT" --latency -s "$script" "$url" >"$out.$i.txt" 2>&1 &
    wpids+=("$!")
  done
  sleep 1
  "$LOADGEN" monitor --group "server=$servers" --group "pg=$(pg_pids)" --group "load=$(IFS=,; echo "${wpids[*]}")" \
    --skip-s 0 --window-s "$(awk -v d="$DURATION" 'BEGIN { print (d > 3 ? d - 2 : d) }')" --while-pid "${wpids[0]}" \
    >"$out.monitor" 2>&1 || true
  for i in "${wpids[@]}"; do wait "$i" || true; done
  # the run's figures: req/s added, p50/p99 the larger of the wrk processes', errors added
  local rps=0 p50=0 p99=0 errors=0 f
  for f in "$out".[0-9].txt; do
    rps=$(awk -v a="$rps" -v b="$(kv "$f" rps)" 'BEGIN { print a + b }')
    p50=$(awk -v a="$p50" -v b="$(kv "$f" p50_ms)" 'BEGIN { print (b + 0 > a ? b + 0 : a) }')
    p99=$(awk -v a="$p99" -v b="$(kv "$f" p99_ms)" 'BEGIN { print (b + 0 > a ? b + 0 : a) }')
    errors=$(( errors + $(wrk_errors "$f") ))
  done
  printf 'RESULT rps=%s p50_ms=%s p99_ms=%s errors=%s server_cores=%s pg_cores=%s load_cores=%s other_cores=%s\n' \
    "$rps" "$p50" "$p99" "$errors" "$(kv "$out.monitor" server_cores)" "$(kv "$out.monitor" pg_cores)" \
    "$(kv "$out.monitor" load_cores)" "$(kv "$out.monitor" other_cores)" >"$out.txt"
  log "$name ($mode): $rps req/s p50 $p50 ms p99 $p99 ms errors $errors | cores server $(kv "$out.monitor" server_cores) pg $(kv "$out.monitor" pg_cores) wrk $(kv "$out.monitor" load_cores) other $(kv "$out.monitor" other_cores)"
}
phase() {  # round one|two
  local round=$1 mode=$2
  if [ "$mode" = two ] && [ -z "$B_PID" ]; then start_replica b "$PORT_B"; B_PID=$STARTED; fi
  if [ "$mode" = one ] && [ -n "$B_PID" ]; then stop_pid "$B_PID"; B_PID=""; fi
  run "users_me.$mode.$round" "$HERE/lua/get.lua" /api/v1/users/me "$mode"
  run "post_message.$mode.$round" "$HERE/lua/post_message.lua" "" "$mode"
}
log "throughput: $ROUNDS rounds of /users/me and POST message, one replica (wrk -t$THREADS -c$CONNS) and two (2 x wrk -t$((THREADS / 2)) -c$((CONNS / 2))), $DURATION s each"
for round in $(seq 1 "$ROUNDS"); do
  if [ $(( round % 2 )) = 1 ]; then phase "$round" one; phase "$round" two; else phase "$round" two; phase "$round" one; fi
done

# ---- 2. re-attach latency across replicas -------------------------------------------------------------
[ -n "$B_PID" ] || { start_replica b "$PORT_B"; B_PID=$STARTED; }
STREAM_TOKEN=$(login "$A_URL" replicas_stream_user)
log "re-attach latency: $REATTACH_N generations of $REATTACH_TOKENS tokens every $REATTACH_TOKEN_DELAY_MS ms on A, watched on B after $REATTACH_ATTACH_AFTER tokens"
echo "loadgen reattach-latency --owner $A_URL --watcher $B_URL -n $REATTACH_N --attach-after $REATTACH_ATTACH_AFTER   # emulator --token-delay-ms $REATTACH_TOKEN_DELAY_MS --tokens $REATTACH_TOKENS" >>"$dir/commands.txt"
TOKEN="$STREAM_TOKEN" "$LOADGEN" reattach-latency --owner "$A_URL" --watcher "$B_URL" -n "$REATTACH_N" \
  --attach-after "$REATTACH_ATTACH_AFTER" --csv "$dir/reattach.csv" >"$dir/reattach.txt" 2>"$dir/reattach.log" \
  || cat "$dir/reattach.log" >&2
r="$dir/reattach.txt"
log "re-attach: $(kv "$r" tokens) tokens, delay p50 $(kv "$r" p50_ms) ms p99 $(kv "$r" p99_ms) ms max $(kv "$r" max_ms) ms; catch-up p50 $(kv "$r" catchup_p50_ms) ms; errors $(kv "$r" errors)"
sleep 1
stuck=$(psql -d "$DB" -Atc "select count(*) from generations where status = 'running'")
stop_pid "$B_PID"; B_PID=""; stop_pid "$A_PID"
warnings=$(cat "$dir"/server-*/stdout.log | grep -ci 'warn' || true)

# ---- the RESULT line -----------------------------------------------------------------------------------
printf 'RESULT'
for scenario in users_me post_message; do
  for mode in one two; do
    runs=""; p50s=""; p99s=""; server=""; other=""; errors=0; sum=0
    for round in $(seq 1 "$ROUNDS"); do
      f="$dir/$scenario.$mode.$round.txt"; rps=$(kv "$f" rps); rps=${rps:-0}
      runs="$runs${runs:+,}$rps"; sum=$(awk -v a="$sum" -v b="$rps" 'BEGIN { print a + b }')
      p50s="$p50s${p50s:+,}$(kv "$f" p50_ms)"; p99s="$p99s${p99s:+,}$(kv "$f" p99_ms)"
      server="$server${server:+,}$(kv "$f" server_cores)"; other="$other${other:+,}$(kv "$f" other_cores)"
      errors=$(( errors + $(kv "$f" errors) ))
    done
    mean=$(awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s / n }')
    declare "${scenario}_${mode}=$mean" "${scenario}_${mode}_errors=$errors"
    printf ' %s_%s_rps=%s %s_%s_rps_runs=%s %s_%s_p50_ms_runs=%s %s_%s_p99_ms_runs=%s %s_%s_errors=%s %s_%s_server_cores_runs=%s %s_%s_other_cores_runs=%s' \
      "$scenario" "$mode" "$mean" "$scenario" "$mode" "$runs" "$scenario" "$mode" "$p50s" "$scenario" "$mode" "$p99s" \
      "$scenario" "$mode" "$errors" "$scenario" "$mode" "$server" "$scenario" "$mode" "$other"
  done
  one="${scenario}_one"; two="${scenario}_two"; e1="${scenario}_one_errors"; e2="${scenario}_two_errors"
  printf ' %s_ratio=%s %s_met=%s' "$scenario" "$(awk -v a="${!two}" -v b="${!one}" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')" \
    "$scenario" "$(awk -v a="${!two}" -v b="${!one}" -v e="$(( ${!e1} + ${!e2} ))" 'BEGIN { print (b > 0 && a >= 0.9 * b && e == 0 ? "yes" : "no") }')"
done
for k in n errors tokens p50_ms p90_ms p99_ms max_ms mean_ms catchup_p50_ms catchup_max_ms within_target_pct target_ms met; do
  printf ' reattach_%s=%s' "$k" "$(kv "$r" "$k")"
done
printf ' rustc_running_at_start=%s loadavg_start=%s loadavg_end=%s' "$rustc_running" "$loadavg_start" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
printf ' reattach_token_delay_ms=%s reattach_tokens_each=%s stuck_running=%s server_warnings=%s conns=%s duration_s=%s rounds=%s pool=%s\n' \
  "$REATTACH_TOKEN_DELAY_MS" "$REATTACH_TOKENS" "$stuck" "$warnings" "$CONNS" "$DURATION" "$ROUNDS" "$POOL"
