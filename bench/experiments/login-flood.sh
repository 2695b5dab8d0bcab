#!/bin/bash
# usage: bench/experiments/login-flood.sh [LABEL]   (after bench/run.sh: needs target/release/rovertchat and the seeded rovertchat_bench database)
# /users/me p99 at 4 connections, idle and during a login flood (8 connections); HASH_SCHED_EXPERIMENT was read by a temporary code switch (not kept)
MODE=${1:-shipped}; ROOT="$(cd "$(dirname "$0")/../.." && pwd)"; W=$(mktemp -d); cd "$W"
export BENCH_LUA_DIR=$ROOT/bench/lua BENCH_USER=bench_user BENCH_PASS='Bench-pass-2024!'
HASH_SCHED_EXPERIMENT=$MODE DATABASE_URL=postgres://postgres@127.0.0.1:5432/rovertchat_bench HOST=127.0.0.1 PORT=18099 ENVIRONMENT=production LOG_LEVEL=warn RATE_LIMITS=off \
 JWT_SECRET_KEY=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa JWT_REFRESH_SECRET_KEY=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb DATA_DIR=$W/data LOG_DIR=$W/logs \
 $ROOT/target/release/rovertchat > $W/server.log 2>&1 &
PID=$!
for i in $(seq 100); do curl -sf http://127.0.0.1:18099/api/v1/health >/dev/null && break; sleep 0.1; done
curl -s -o /dev/null -c $W/jar --data-urlencode "username=bench_user" --data-urlencode "password=Bench-pass-2024!" http://127.0.0.1:18099/api/v1/auth/login
export TOKEN=$(awk '$6=="access_token"{print $7}' $W/jar | tail -1)
wrk -t1 -c4 -d3s -s $BENCH_LUA_DIR/get.lua http://127.0.0.1:18099/api/v1/users/me >/dev/null
idle=$(wrk -t1 -c4 -d10s --latency -s $BENCH_LUA_DIR/get.lua http://127.0.0.1:18099/api/v1/users/me | grep -E "^ +99%|Requests/sec")
wrk -t1 -c8 -d16s -s $BENCH_LUA_DIR/login.lua http://127.0.0.1:18099 > $W/flood.txt 2>&1 &
FP=$!
sleep 3
fl=$(wrk -t1 -c4 -d10s --latency -s $BENCH_LUA_DIR/get.lua http://127.0.0.1:18099/api/v1/users/me | grep -E "^ +99%|Requests/sec")
wait $FP
echo "$MODE idle: $(echo $idle) | flood: $(echo $fl) | logins: $(grep Requests/sec $W/flood.txt)"
kill $PID; wait $PID 2>/dev/null
