# Sourced by the CI scripts: starts the Ollama emulator and the server (debug build) on a
# database of their own, and stops and removes everything when the script exits.
#   start_stack sqlite|postgres     (postgres needs TEST_DATABASE_URL)
# Afterwards: $base (the server's URL), $work (a scratch directory), $DATABASE_URL (PostgreSQL
# only), $DATA_DIR. Extra server settings are taken from the environment (export them first).

work="$(mktemp -d)"
pids=()
stack_db=""
stop_stack() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$stack_db" ]; then
    psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$stack_db\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap stop_stack EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_stack() {
  local backend="$1"
  cargo build --locked --quiet -p rovertchat -p ollama-emulator --bins
  local ollama_port
  ollama_port="$(free_port)"
  target/debug/ollama-emulator --port "$ollama_port" --quiet > "$work/emulator.log" 2>&1 &
  pids+=($!)

  export PORT="$(free_port)" HOST=127.0.0.1 RATE_LIMITS="${RATE_LIMITS:-off}" LOG_LEVEL=warn
  export DATA_DIR="$work/data" LOG_DIR="$work/logs" OLLAMA_BASE_URL="http://127.0.0.1:$ollama_port"
  export JWT_SECRET_KEY="ci-access-secret-0123456789abcdef0123456" JWT_REFRESH_SECRET_KEY="ci-refresh-secret-0123456789abcdef012345"
  unset DATABASE_URL
  if [ "$backend" = postgres ]; then
    stack_db="rovertchat_ci_$$"
    psql "$TEST_DATABASE_URL" -qc "CREATE DATABASE \"$stack_db\"" >/dev/null
    export DATABASE_URL="${TEST_DATABASE_URL%/*}/$stack_db"
  fi
  target/debug/rovertchat > "$work/server.log" 2>&1 &
  pids+=($!)
  base="http://127.0.0.1:$PORT"
  for _ in $(seq 1 100); do curl -sf "$base/api/v1/health" >/dev/null && break; sleep 0.1; done
  curl -sf "$base/api/v1/health" >/dev/null || { cat "$work/server.log"; echo "server did not start" >&2; exit 1; }
}
