#!/usr/bin/env bash
# The OpenAI-compatible API (/v1): added time to first token, and GET /v1/models against GET /users/me.
#
#   BASE=http://127.0.0.1:18080 EMULATOR=http://127.0.0.1:18434 LOADGEN=bench/loadgen/target/release/loadgen \
#     OUT_DIR=<dir> bench/openai.sh
#
# Called by bench/run.sh on its main server; runs alone against any server started with
# RATE_LIMITS=off (one key sends tens of thousands of requests) whose OLLAMA_BASE_URL is EMULATOR
# (an ollama-emulator with no delays: `--first-token-delay-ms 0 --token-delay-ms 0 --tokens 5`).
# It registers and logs in OPENAI_USER, creates an API key for it (POST /api/v1/api-keys), then:
#   1. `loadgen openai-ttft`: TTFT_N sequential streamed requests each way, interleaved, after 20
#      unrecorded: the emulator's POST /api/chat (first NDJSON line) vs POST /v1/chat/completions
#      with `stream: true` (first `data:` chunk with content). Target: added p50 < 1 ms.
#   2. wrk, ROUNDS times in turn: GET /api/v1/users/me with the user's session cookie
#      (lua/get.lua) and GET /v1/models with the key (lua/get_bearer.lua), same user, connections
#      and duration. Target: /v1/models at least as many req/s as /users/me.
# With SERVER_PID set, `loadgen monitor` reports the cores the server and everything else used
# during each wrk run (the machine may be shared).
#
# Prints one line: RESULT ttft_direct_p50_ms=.. ttft_server_p50_ms=.. ttft_added_p50_ms=.. ... ttft_met=yes|no
#   users_me_rps=.. models_rps=.. (means over the rounds) models_vs_users_me=.. models_met=yes|no ...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="${BASE:?BASE=http://host:port (the server root)}"
EMULATOR="${EMULATOR:?EMULATOR=http://host:port (the emulator the server talks to)}"
LOADGEN="${LOADGEN:-$HERE/loadgen/target/release/loadgen}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
SERVER_PID="${SERVER_PID:-}"
TTFT_N="${TTFT_N:-200}"; MODEL="${MODEL:-llama3.2:1b}"
DURATION="${DURATION:-10}"; WARMUP="${WARMUP:-2}"; COOLDOWN="${COOLDOWN:-2}"
CONNS="${CONNS:-32}"; THREADS="${THREADS:-2}"; TIMEOUT="${TIMEOUT:-10s}"; ROUNDS="${ROUNDS:-2}"
USERNAME="${OPENAI_USER:-openai_user}"
PASSWORD="${OPENAI_PASS:-Bench-pass-2024!}"
export BENCH_LUA_DIR="$HERE/lua"
API="$BASE/api/v1"
mkdir -p "$OUT_DIR"
[ -x "$LOADGEN" ] || { echo "openai: no loadgen at $LOADGEN (cargo build --release --manifest-path bench/loadgen/Cargo.toml)" >&2; exit 1; }
for tool in wrk curl; do command -v "$tool" >/dev/null || { echo "openai: $tool is required (apt-get install $tool)" >&2; exit 1; }; done
kv() { grep -h '^RESULT' "$1" 2>/dev/null | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
# socket errors + HTTP >= 400 of a wrk output; a run without a RESULT line counts as one error
wrk_errors() {
  local f=$1 k sum=0 v
  [ -n "$(kv "$f" rps)" ] || { echo 1; return; }
  for k in err_connect err_read err_write err_timeout status_ge_400; do v=$(kv "$f" "$k"); sum=$(( sum + ${v:-0} )); done
  echo "$sum"
}
log() { echo "[openai $(date +%H:%M:%S)] $*" >&2; }

# ---- an account, a session and an API key ----------------------------------------------------------
curl -s -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USERNAME\",\"email\":\"$USERNAME@example.com\",\"password\":\"$PASSWORD\"}" "$API/auth/register"
token="$(curl -s --data-urlencode "username=$USERNAME" --data-urlencode "password=$PASSWORD" "$API/auth/login" \
  | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4)"
[ -n "$token" ] || { echo "openai: login as $USERNAME failed" >&2; exit 1; }
key="$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"bench"}' \
  "$API/api-keys" | grep -o '"key":"rc-[^"]*"' | cut -d'"' -f4)"
[ -n "$key" ] || { echo "openai: creating an API key failed" >&2; exit 1; }
models_status=$(curl -s -o "$OUT_DIR/openai_models.json" -w '%{http_code}' -H "Authorization: Bearer $key" "$BASE/v1/models")
[ "$models_status" = 200 ] && grep -qF "\"$MODEL\"" "$OUT_DIR/openai_models.json" \
  || { echo "openai: GET /v1/models answered $models_status without $MODEL: $(head -c 300 "$OUT_DIR/openai_models.json")" >&2; exit 1; }

# ---- 1. time to first token ------------------------------------------------------------------------
log "time to first token through /v1/chat/completions: $TTFT_N requests each way"
echo "loadgen openai-ttft --server $BASE --emulator $EMULATOR --key rc-... -n $TTFT_N --model $MODEL" >>"$OUT_DIR/commands.txt"
API_KEY="$key" "$LOADGEN" openai-ttft --server "$BASE" --emulator "$EMULATOR" --model "$MODEL" -n "$TTFT_N" \
  --csv "$OUT_DIR/openai_ttft.csv" >"$OUT_DIR/openai_ttft.txt" 2>"$OUT_DIR/openai_ttft.log" || cat "$OUT_DIR/openai_ttft.log" >&2

# ---- 2. GET /v1/models (key) vs GET /users/me (session), in turn -------------------------------------
wrk_once() {  # name script url -> $OUT_DIR/openai_<name>.txt (+ .monitor with SERVER_PID)
  local name=$1 script=$2 url=$3 out="$OUT_DIR/openai_$1"
  if [ "$WARMUP" != 0 ]; then
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" --timeout "$TIMEOUT" -s "$script" "$url" >"$out.warmup.txt" 2>&1 || true
    sleep "$COOLDOWN"
  fi
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --timeout $TIMEOUT --latency -s bench/lua/${script##*/} $url" >>"$OUT_DIR/commands.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout "$TIMEOUT" --latency -s "$script" "$url" >"$out.txt" 2>&1 &
  local wpid=$!
  if [ -n "$SERVER_PID" ]; then
    sleep 1
    "$LOADGEN" monitor --group "server=$SERVER_PID" --group "load=$wpid" --skip-s 0 \
      --window-s "$(awk -v d="$DURATION" 'BEGIN { print (d > 3 ? d - 2 : d) }')" --while-pid "$wpid" >"$out.monitor" 2>&1 || true
  fi
  wait "$wpid" || true
  local errors; errors=$(wrk_errors "$out.txt")
  log "$name: $(kv "$out.txt" rps) req/s p50 $(kv "$out.txt" p50_ms) ms p99 $(kv "$out.txt" p99_ms) ms errors $errors$( [ -n "$SERVER_PID" ] && echo " | cores server $(kv "$out.monitor" server_cores) wrk $(kv "$out.monitor" load_cores) other $(kv "$out.monitor" other_cores)")"
}
for round in $(seq 1 "$ROUNDS"); do
  TOKEN="$token" wrk_once "users_me.$round" "$HERE/lua/get.lua" "$API/users/me"
  API_KEY="$key" wrk_once "models.$round" "$HERE/lua/get_bearer.lua" "$BASE/v1/models"
done

# ---- the RESULT line ---------------------------------------------------------------------------------
t="$OUT_DIR/openai_ttft.txt"
printf 'RESULT'
for k in n errors direct_p50_ms direct_p99_ms server_p50_ms server_p99_ms added_p50_ms added_p99_ms paired_diff_p50_ms paired_diff_p99_ms; do
  printf ' ttft_%s=%s' "$k" "$(kv "$t" "$k")"
done
printf ' ttft_met=%s' "$(awk -v a="$(kv "$t" added_p50_ms)" -v e="$(kv "$t" errors)" 'BEGIN { print (a != "" && a + 0 < 1 && e == 0 ? "yes" : "no") }')"
for name in users_me models; do
  runs=""; sum=0; p50s=""; p99s=""; errors=0; server=""; other=""
  for round in $(seq 1 "$ROUNDS"); do
    f="$OUT_DIR/openai_$name.$round"
    rps=$(kv "$f.txt" rps); rps=${rps:-0}
    runs="$runs${runs:+,}$rps"; sum=$(awk -v a="$sum" -v b="$rps" 'BEGIN { print a + b }')
    p50s="$p50s${p50s:+,}$(kv "$f.txt" p50_ms)"; p99s="$p99s${p99s:+,}$(kv "$f.txt" p99_ms)"
    errors=$(( errors + $(wrk_errors "$f.txt") ))
    if [ -n "$SERVER_PID" ]; then
      server="$server${server:+,}$(kv "$f.monitor" server_cores)"; other="$other${other:+,}$(kv "$f.monitor" other_cores)"
    fi
  done
  printf ' %s_rps=%s %s_rps_runs=%s %s_p50_ms_runs=%s %s_p99_ms_runs=%s %s_errors=%s' \
    "$name" "$(awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s / n }')" "$name" "$runs" "$name" "$p50s" "$name" "$p99s" "$name" "$errors"
  [ -z "$SERVER_PID" ] || printf ' %s_server_cores_runs=%s %s_other_cores_runs=%s' "$name" "$server" "$name" "$other"
  declare "${name}_mean=$(awk -v s="$sum" -v n="$ROUNDS" 'BEGIN { print s / n }')" "${name}_errors=$errors"
done
printf ' models_vs_users_me=%s models_met=%s conns=%s duration_s=%s rounds=%s\n' \
  "$(awk -v m="$models_mean" -v u="$users_me_mean" 'BEGIN { printf "%.3f", (u > 0 ? m / u : 0) }')" \
  "$(awk -v m="$models_mean" -v u="$users_me_mean" -v e="$((models_errors + users_me_errors))" 'BEGIN { print (u > 0 && m >= u && e == 0 ? "yes" : "no") }')" \
  "$CONNS" "$DURATION" "$ROUNDS"
