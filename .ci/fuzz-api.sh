#!/usr/bin/env bash
# Schema-driven fuzzing of the running API with schemathesis, on one database.
#   .ci/fuzz-api.sh sqlite
#   .ci/fuzz-api.sh postgres   (needs TEST_DATABASE_URL)
# Starts the Ollama emulator and the server (debug build), seeds an admin, a user, a chat and
# a message, then fuzzes every operation twice (as a user, then as an admin) with checks for
# 5xx, undocumented status codes, wrong content types and responses off their schema.
# Bounded by SCHEMATHESIS_MAX_EXAMPLES (default 15) and SCHEMATHESIS_MAX_TIME (default 45 s) per run.
# Each run starts from nothing: schemathesis' cache of earlier runs is switched off.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
backend="${1:?usage: fuzz-api.sh sqlite|postgres}"

# schemathesis in a virtualenv of its own, on a Python whose `ast` module is thread-safe: before
# CPython 3.11.8 and 3.12.2 the AST constructor's recursion counter is shared between threads
# (python/cpython#106905), and schemathesis' coverage phase, run by several workers, then dies
# with "SystemError: AST constructor recursion depth mismatch". SCHEMATHESIS_PYTHON picks one.
SCHEMATHESIS_VERSION=4.32.5
venv="target/schemathesis-$SCHEMATHESIS_VERSION"
python_is_fixed() {
  "$1" -c 'import sys; v = sys.version_info[:3]
sys.exit(0 if v >= (3, 13) or (3, 12, 2) <= v < (3, 13) or (3, 11, 8) <= v < (3, 12) else 1)' 2>/dev/null
}
if [ ! -x "$venv/bin/schemathesis" ]; then
  python=""
  candidates=(${SCHEMATHESIS_PYTHON:-} python3.13 python3.12 python3.14 python3 python3.11)
  if command -v pyenv >/dev/null 2>&1; then candidates+=("$(pyenv root)"/versions/3.1[1-9]*/bin/python3); fi
  for candidate in "${candidates[@]}"; do
    if python_is_fixed "$candidate"; then python="$candidate"; break; fi
  done
  if [ -z "$python" ]; then
    # No fixed Python: the race needs two threads, so one worker is safe (and slower).
    python="python3"
    echo "no Python with the fix for python/cpython#106905; schemathesis runs with one worker"
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "schemathesis $SCHEMATHESIS_VERSION on $("$venv/bin/python" --version)"
if python_is_fixed "$venv/bin/python"; then workers=2; else workers=1; fi

# The emulator and the server on a database of their own (sets $base, $work, $DATABASE_URL).
source .ci/stack.sh
start_stack "$backend"

api="$base/api/v1"
json() { python3 -c "import sys, json; print(json.load(sys.stdin)$1)"; }
register() { curl -sf -H 'content-type: application/json' -d "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"Fuzz-pass-2024!\"}" "$api/auth/register" >/dev/null; }
token() { curl -sf --data-urlencode "username=$1" --data-urlencode 'password=Fuzz-pass-2024!' "$api/auth/login" | json "['access_token']"; }
register fuzz_admin
register fuzz_user
register fuzz_target
admin_token="$(token fuzz_admin)"
user_token="$(token fuzz_user)"
# The account in /users/{user_id}: the admin's run may rename, demote or deactivate it.
target_token="$(token fuzz_target)"
user_id="$(curl -sf -H "Authorization: Bearer $target_token" "$api/users/me" | json "['id']")"

seed_chat() {  # a chat and a message of the token's user
  local chat message
  chat="$(curl -sf -X POST -H "Authorization: Bearer $1" -H 'content-type: application/json' -d '{"title":"Fuzzed"}' "$api/chats/my" | json "['id']")"
  message="$(curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' -d '{"role":"user","content":"hello"}' "$api/chats/$chat/messages" | json "['id']")"
  echo "$chat $message"
}

status=0
for who in user admin; do
  token_var="${who}_token"
  read -r chat_id message_id < <(seed_chat "${!token_var}")
  # The OpenAI-compatible API (/v1) takes a personal API key instead of the session.
  api_key="$(curl -sf -H "Authorization: Bearer ${!token_var}" -H 'content-type: application/json' -d '{"name":"fuzz"}' "$api/api-keys" | json "['key']")"
  cat > "$work/schemathesis-$who.toml" <<EOF
[cache]
enabled = false

[parameters]
"path.chat_id" = "$chat_id"
"path.message_id" = "$message_id"
"path.user_id" = "$user_id"
"path.model" = "llama3.2:1b"
EOF
  echo "== schemathesis on $backend as the $who"
  # Logout would revoke the token the run uses; the authorization matrix test covers it. A password
  # change ends it too, but answers with a new one, which the hooks take up (schemathesis_hooks.py).
  # Providers are not fuzzed: a made-up provider is an unreachable upstream, which makes pull and
  # delete (acting on every provider) answer 502 as they should; tests/api/providers.rs covers
  # their validation.
  FUZZ_ACCESS_TOKEN="${!token_var}" FUZZ_API_KEY="$api_key" SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=.ci \
    "$venv/bin/schemathesis" --config-file "$work/schemathesis-$who.toml" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --exclude-path /api/v1/auth/logout \
    --exclude-path-regex '^/api/v1/admin/providers' \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-15}" \
    --max-time "${SCHEMATHESIS_MAX_TIME:-45}" \
    --workers "$workers" --no-color --seed 1 || status=1
done
if [ "$status" != 0 ]; then
  echo "--- server log (last 50 lines)"; tail -50 "$work/server.log"
fi
exit "$status"
