#!/usr/bin/env bash
# What routing costs: the added time to first token through POST /v1/chat/completions with one
# provider and with three (two more emulators serving the same model, so every request is routed
# among three candidates), and optionally through a baseline binary (BASELINE_BIN, e.g. a build
# from before the providers registry existed).
#
#   BIN=<dir with rovertchat and ollama-emulator> LOADGEN=bench/loadgen/target/release/loadgen \
#     OUT_DIR=<dir> [BASELINE_BIN=<an older rovertchat>] [BACKENDS="postgres sqlite"] bench/routing.sh
#
# Each configuration gets its own server (release, RATE_LIMITS=off, LOG_LEVEL=warn) on a fresh
# database, a user and an API key, then `loadgen openai-ttft` (TTFT_N sequential streamed
# requests each way, interleaved with the emulator directly, after 20 unrecorded). The
# configurations are measured in turn, ROUNDS times, so that a drift of the machine touches all
# alike; the figures are medians over the rounds of each run's p50 / p99.
#
# Prints one line: RESULT <backend>_<config>_added_p50_ms=.. <backend>_<config>_added_p99_ms=..
#   <backend>_routing_p50_ms=.. (three providers minus one) [<backend>_vs_baseline_p50_ms=..]
#   routing_met=yes|no (target: routing adds < 0.1 ms to the p50 on every backend)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${BIN:?BIN=<dir with the release rovertchat and ollama-emulator>}"
LOADGEN="${LOADGEN:-$HERE/loadgen/target/release/loadgen}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
BASELINE_BIN="${BASELINE_BIN:-}"
BACKENDS="${BACKENDS:-postgres sqlite}"
TTFT_N="${TTFT_N:-300}"; ROUNDS="${ROUNDS:-3}"; MODEL="${MODEL:-llama3.2:1b}"
PORT="${PORT:-18280}"; EMU_PORTS="${EMU_PORTS:-18534 18536 18537}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
DB="${ROUTING_DB:-rovertchat_routing}"
BASE="http://127.0.0.1:$PORT"; API="$BASE/api/v1"
PASSWORD='Bench-pass-2024!'
mkdir -p "$OUT_DIR"
for tool in curl psql createdb dropdb; do command -v "$tool" >/dev/null || { echo "routing: $tool is required" >&2; exit 1; }; done
[ -x "$LOADGEN" ] || { echo "routing: no loadgen at $LOADGEN" >&2; exit 1; }
log() { echo "[routing $(date +%H:%M:%S)] $*" >&2; }
kv() { grep -h '^RESULT' "$1" 2>/dev/null | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1==k{print $2}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END { if (NR == 0) print ""; else if (NR % 2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2] + v[NR/2+1]) / 2 }'; }

PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_http() { local i; for i in $(seq 1 "$2"0); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }
for port in $EMU_PORTS; do
  "$BIN/ollama-emulator" --port "$port" --quiet --first-token-delay-ms 0 --token-delay-ms 0 --tokens 5 \
    >"$OUT_DIR/emulator-$port.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$port/api/version" 10 || { echo "routing: emulator on $port did not start" >&2; exit 1; }
done
first_emulator="http://127.0.0.1:${EMU_PORTS%% *}"
all_emulators="$(for p in $EMU_PORTS; do printf 'http://127.0.0.1:%s,' "$p"; done)"; all_emulators="${all_emulators%,}"

# measure LABEL BINARY BACKEND UPSTREAMS -> $OUT_DIR/<label>.<round>.txt (a loadgen RESULT line)
measure() {
  local label=$1 binary=$2 backend=$3 upstreams=$4 round=$5
  local dir="$OUT_DIR/server-$label-$round"; rm -rf "$dir"; mkdir -p "$dir"
  local db_env=()
  if [ "$backend" = postgres ]; then
    dropdb --if-exists "$DB" 2>/dev/null; createdb "$DB"
    db_env=(DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB${PG_URL_PARAMS:-}")
  fi
  (cd "$dir" && exec env "${db_env[@]}" HOST=127.0.0.1 PORT="$PORT" ENVIRONMENT=production LOG_LEVEL=warn \
      RATE_LIMITS=off GENERATIONS_PER_USER=100000 OLLAMA_BASE_URL="$upstreams" \
      JWT_SECRET_KEY="$(printf 'a%.0s' {1..64})" JWT_REFRESH_SECRET_KEY="$(printf 'b%.0s' {1..64})" \
      DATA_DIR="$dir/data" LOG_DIR="$dir/logs" "$binary") >"$dir/stdout.log" 2>&1 &
  local server=$!
  wait_http "$API/health" 30 || { tail -5 "$dir/stdout.log" >&2; echo "routing: server $label did not start" >&2; exit 1; }
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"routing\",\"email\":\"routing@example.com\",\"password\":\"$PASSWORD\"}" "$API/auth/register"
  local token key
  token="$(curl -s --data-urlencode "username=routing" --data-urlencode "password=$PASSWORD" "$API/auth/login" \
    | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4)"
  key="$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"routing"}' \
    "$API/api-keys" | grep -o '"key":"rc-[^"]*"' | cut -d'"' -f4)"
  [ -n "$key" ] || { echo "routing: no API key on $label" >&2; exit 1; }
  # every provider must have listed the model before the measured requests
  local i; for i in $(seq 1 100); do
    curl -s -H "Authorization: Bearer $key" "$BASE/v1/models" | grep -qF "\"$MODEL\"" && break; sleep 0.1
  done
  API_KEY="$key" "$LOADGEN" openai-ttft --server "$BASE" --emulator "$first_emulator" --model "$MODEL" -n "$TTFT_N" \
    >"$OUT_DIR/$label.$round.txt" 2>"$OUT_DIR/$label.$round.log" || { cat "$OUT_DIR/$label.$round.log" >&2; exit 1; }
  kill -TERM "$server"; wait "$server" 2>/dev/null || true
  log "$label round $round: added p50 $(kv "$OUT_DIR/$label.$round.txt" added_p50_ms) ms, p99 $(kv "$OUT_DIR/$label.$round.txt" added_p99_ms) ms, errors $(kv "$OUT_DIR/$label.$round.txt" errors)"
}

configs=()
for backend in $BACKENDS; do
  configs+=("$backend-one $BIN/rovertchat $backend $first_emulator" "$backend-three $BIN/rovertchat $backend $all_emulators")
  [ -z "$BASELINE_BIN" ] || configs+=("$backend-baseline $BASELINE_BIN $backend $first_emulator")
done
for round in $(seq 1 "$ROUNDS"); do
  for config in "${configs[@]}"; do
    # shellcheck disable=SC2086
    measure ${config%% *} ${config#* } "$round"
  done
done
[ "$BACKENDS" = "${BACKENDS/postgres/}" ] || dropdb --if-exists "$DB" 2>/dev/null

figure() { local label=$1 key=$2 r; for r in $(seq 1 "$ROUNDS"); do printf '%s ' "$(kv "$OUT_DIR/$label.$r.txt" "$key")"; done | median; }
printf 'RESULT'
met=yes
for backend in $BACKENDS; do
  for config in one three $([ -z "$BASELINE_BIN" ] || echo baseline); do
    printf ' %s_%s_added_p50_ms=%s %s_%s_added_p99_ms=%s' "$backend" "$config" "$(figure "$backend-$config" added_p50_ms)" \
      "$backend" "$config" "$(figure "$backend-$config" added_p99_ms)"
  done
  routing=$(awk -v t="$(figure "$backend-three" added_p50_ms)" -v o="$(figure "$backend-one" added_p50_ms)" 'BEGIN { printf "%.3f", t - o }')
  printf ' %s_routing_p50_ms=%s' "$backend" "$routing"
  awk -v r="$routing" 'BEGIN { exit !(r < 0.1) }' || met=no
  if [ -n "$BASELINE_BIN" ]; then
    printf ' %s_vs_baseline_p50_ms=%s' "$backend" \
      "$(awk -v n="$(figure "$backend-one" added_p50_ms)" -v b="$(figure "$backend-baseline" added_p50_ms)" 'BEGIN { printf "%.3f", n - b }')"
  fi
done
printf ' routing_met=%s ttft_n=%s rounds=%s\n' "$met" "$TTFT_N" "$ROUNDS"
