#!/usr/bin/env bash
# The official OpenAI Python SDK (pinned) against the server's OpenAI-compatible API, on one
# database: models, chat (whole and streamed, with usage), a tool-call round trip, an image part,
# embeddings, and the SDK's exception classes for each refusal (.ci/openai_conformance.py).
#   .ci/openai-conformance.sh sqlite
#   .ci/openai-conformance.sh postgres   (needs TEST_DATABASE_URL)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
backend="${1:?usage: openai-conformance.sh sqlite|postgres}"

OPENAI_VERSION=3.63.0
venv="target/openai-$OPENAI_VERSION"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
echo "openai $("$venv/bin/python" -c 'import openai; print(openai.__version__)') on $("$venv/bin/python" --version)"

# Rate limits on, so that the SDK meets a 429; the per-key limit is what the script exhausts.
# No row caches: the script expires a key in the database and expects it refused at once.
export RATE_LIMITS=on RATE_LIMIT_API_KEY=20/minute RATE_LIMIT_REGISTER=100/minute RATE_LIMIT_LOGIN=100/minute USER_CACHE_SECS=0
source .ci/stack.sh
start_stack "$backend"

if [ "$backend" = postgres ]; then db_target="$DATABASE_URL"; else db_target="$DATA_DIR/rovertchat.db"; fi
if ! BASE="$base" DB_KIND="$backend" DB_TARGET="$db_target" KEY_LIMIT=20 "$venv/bin/python" .ci/openai_conformance.py; then
  echo "--- server log (last 50 lines)"; tail -50 "$work/server.log"
  exit 1
fi
