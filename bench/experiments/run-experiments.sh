#!/bin/bash
# Usage: EXP_BIN=<server built with env-toggles.patch> bench/experiments/run-experiments.sh http|login|ttft
# (VARIANTS="EXP_HASH_PERMITS=2,EXP_HASH_IDLE=1 ..." for login; commas separate variables of one variant; D=10 seconds per run)
# Experiments with an env-toggled copy of the server (diagnostics for BENCHMARKS.md; not part of the harness)
set -u
B=${EXP_BIN:?set EXP_BIN to the server built with env-toggles.patch}
HERE=$(cd "$(dirname "$0")/.." && pwd); E=${EMU_BIN:-$HERE/../target/release/ollama-emulator}
L=${LOADGEN:-$HERE/loadgen/target/release/loadgen}
LUA=$HERE/lua
export BENCH_LUA_DIR=$LUA BENCH_USER=bench_user BENCH_PASS='Bench-pass-2024!'
DB=rovertchat_exp; PORT=18280; EPORT=18634
OUT=${OUT:-/tmp/rovertchat-exp}; rm -rf $OUT; mkdir -p $OUT
D=${D:-10}
dropdb -h 127.0.0.1 -U postgres --if-exists -f $DB; createdb -h 127.0.0.1 -U postgres $DB
$E --port $EPORT --quiet --tokens 5 > /dev/null 2>&1 & EP=$!
SP=""
start() { # name, env...
  local name=$1; shift
  env DATABASE_URL=${DBURL:-postgres://postgres@127.0.0.1:5432/$DB} HOST=127.0.0.1 PORT=$PORT JWT_SECRET_KEY=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa JWT_REFRESH_SECRET_KEY=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb ENVIRONMENT=production LOG_LEVEL=warn RATE_LIMITS=off GENERATIONS_PER_USER=100000 OLLAMA_BASE_URL=http://127.0.0.1:$EPORT DATA_DIR=$OUT/data LOG_DIR=$OUT/logs "$@" $B > $OUT/server-$name.log 2>&1 &
  SP=$!
  for i in $(seq 100); do curl -sf -o /dev/null localhost:$PORT/api/v1/health && break; sleep 0.05; done
}
stop() { kill $SP; wait $SP 2>/dev/null; }
w() { # label conns dur script url [threads]
  local label=$1 c=$2 d=$3 s=$4 u=$5 t=${6:-2}
  wrk -t$t -c$c -d2s -s $s $u > /dev/null 2>&1; sleep 1
  wrk -t$t -c$c -d${d}s --latency -s $s $u > $OUT/$label.txt 2>&1 & local wp=$!
  sleep 1; local pg=$(psql -h 127.0.0.1 -U postgres -d $DB -Atc "select string_agg(pid::text, ',') from pg_stat_activity where pid <> pg_backend_pid() and (datname = '$DB' or backend_type <> 'client backend')")
  $L monitor --group server=$SP --group pg=$pg --group load=$wp --skip-s 1 --window-s $((d-3)) --while-pid $wp > $OUT/$label.mon 2>&1
  wait $wp
  local r=$(grep RESULT $OUT/$label.txt) m=$(grep RESULT $OUT/$label.mon)
  kvv() { echo "$1" | tr ' ' '\n' | awk -F= -v k=$2 '$1==k{print $2}'; }
  printf '%-40s rps %8s p50 %7s p99 %8s err %s/%s | cores srv %s pg %s load %s other %s | rss %s thr %s\n' "$label" "$(kvv "$r" rps)" "$(kvv "$r" p50_ms)" "$(kvv "$r" p99_ms)" "$(kvv "$r" err_read)" "$(kvv "$r" status_ge_400)" "$(kvv "$m" server_cores)" "$(kvv "$m" pg_cores)" "$(kvv "$m" load_cores)" "$(kvv "$m" other_cores)" "$(kvv "$m" server_rss_max_mib)" "$(kvv "$m" server_threads_max)"
}
seed() {
  curl -s -o /dev/null -H 'Content-Type: application/json' -d '{"username":"bench_user","email":"bench_user@example.com","password":"Bench-pass-2024!"}' localhost:$PORT/api/v1/auth/register
  curl -s -o /dev/null -c $OUT/jar --data-urlencode username=bench_user --data-urlencode 'password=Bench-pass-2024!' localhost:$PORT/api/v1/auth/login
  export TOKEN=$(awk '$6=="access_token"{print $7}' $OUT/jar)
  n=$(curl -s -b "access_token=$TOKEN" "localhost:$PORT/api/v1/chats/my?limit=1" | grep -o '"total":[0-9]*' | cut -d: -f2)
  while [ "${n:-0}" -lt 50 ]; do curl -sf -o /dev/null -b "access_token=$TOKEN" -H 'Content-Type: application/json' -d '{"title":"c"}' localhost:$PORT/api/v1/chats/my; n=$((n+1)); done
  export CHAT_ID=$(curl -s -b "access_token=$TOKEN" "localhost:$PORT/api/v1/chats/my?limit=1" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
}
http_set() { # name env...
  local name=$1; shift
  start $name "$@"; seed
  w "$name.users_me" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me
  w "$name.chats_my" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/chats/my
  w "$name.post_message" 32 $D $LUA/post_message.lua http://localhost:$PORT
  stop
}
case "${1:-all}" in
http)
  http_set base
  http_set noping EXP_NO_TEST_BEFORE_ACQUIRE=1
  http_set base2
  http_set noping2 EXP_NO_TEST_BEFORE_ACQUIRE=1
  start jemalloc EXP_NO_TEST_BEFORE_ACQUIRE=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2; seed
  w "noping+jemalloc.users_me" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me; stop
  start mimalloc EXP_NO_TEST_BEFORE_ACQUIRE=1 LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2; seed
  w "noping+mimalloc.users_me" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me; stop
  DBURL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" start nossl EXP_NO_TEST_BEFORE_ACQUIRE=1; seed
  w "noping+nossl.users_me" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me; stop
  DBURL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" start nossl-ping; seed
  w "nossl.users_me" 32 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me; stop
  UID_=$(psql -h 127.0.0.1 -U postgres -d $DB -Atc "select id from users where username='bench_user'")
  for mode in prefer disable; do
    PGSSLMODE=$mode pgbench -h 127.0.0.1 -U postgres -n -M prepared -c 32 -j 2 -T $D -D uid=$UID_ -f $HERE/pgbench/users_me.sql $DB 2>&1 | awk -v m=$mode '/^tps/{print "pgbench users_me sslmode=" m ": " $3 " tps"}'
  done
  ;;
login)
  for v in ${VARIANTS:-"" EXP_HASH_PERMITS=2 EXP_HASH_PERMITS=1}; do
    name="login_$(echo "${v:-default}" | tr -c 'A-Za-z0-9_\n' '_')"
    start $name ${v//,/ }; seed
    w "$name.login" 8 $D $LUA/login.lua http://localhost:$PORT
    w "$name.me_idle" 4 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me 1
    wrk -t1 -c8 -d$((D+6))s -s $LUA/login.lua http://localhost:$PORT > $OUT/flood.txt 2>&1 & FP=$!
    sleep 2
    w "$name.me_flood" 4 $D $LUA/get.lua http://localhost:$PORT/api/v1/users/me 1
    wait $FP; echo "   flood: $(grep RESULT $OUT/flood.txt)"; echo "   tx warnings: $(grep -c 'already a transaction' $OUT/server-$name.log)"
    stop
  done
  ;;
ttft)
  for v in "" "EXP_NO_TEST_BEFORE_ACQUIRE=1"; do
    start x LD_PRELOAD=${SHIM:?cc -shared -fPIC -O2 -o shim.so bench/tools/nodelay_shim.c -ldl; SHIM=shim.so} $v; seed
    echo "ttft nodelay ${v:-}: $($L ttft --server http://127.0.0.1:$PORT --emulator http://127.0.0.1:$EPORT -n 200 2>&1 | tail -1)"
    stop
  done
  ;;
esac
kill $EP
