#!/usr/bin/env bash
# Worst-case request bodies: 16 at once on each route that takes a body, then the server's peak RSS.
#
#   API=http://127.0.0.1:18080/api/v1 SERVER_PID=<pid> OUT_DIR=<dir> bench/bodies.sh
#
# Called by bench/run.sh on a freshly started server; runs alone against any server this machine
# started (it reads /proc/SERVER_PID/status). The server needs RATE_LIMITS=off: the same client
# registers, logs in and sends 80 bodies in a few seconds. Each body is BODY_BYTES (8 MiB) of
# `[[],[],...]` JSON, or of empty form fields for the login form, whose parsed form would be many
# times its size; half declare their Content-Length, half are sent chunked so the server must read
# to learn their size. tests/api/body_limits.rs holds the same idea as a test.
#
# Prints one line: RESULT rss_before_mib=.. peak_rss_mib=.. peak_rss_mb=.. limit_mb=300 met=yes|no
#   unexpected=N register=STATUS:COUNT,... login=... settings=... messages=... completions=...
# STATUS 000 = the server answered and closed before the body was sent; unexpected counts answers
# other than 413, 422 and 000 (a refusal is the only right answer to these bodies).
set -euo pipefail

API="${API:?API=http://host:port/api/v1}"
SERVER_PID="${SERVER_PID:?SERVER_PID=<pid of the server>}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
PARALLEL="${PARALLEL:-16}"
BODY_BYTES="${BODY_BYTES:-$((8 * 1024 * 1024))}"
LIMIT_MB="${LIMIT_MB:-300}"
USERNAME="${BODIES_USER:-bodies_user}"
PASSWORD="${BODIES_PASS:-Bench-pass-2024!}"
dir="$OUT_DIR/bodies"
mkdir -p "$dir"

hwm_kib() { awk '/^VmHWM:/{print $2}' "/proc/$SERVER_PID/status"; }
[ -r "/proc/$SERVER_PID/status" ] || { echo "bodies: no process $SERVER_PID" >&2; exit 1; }

# ---- the bodies ----------------------------------------------------------------------------------
empty_lists_json() {  # prefix -> {prefix[[],[],...,[]]} of about BODY_BYTES
  local prefix=$1 fill=$(( (BODY_BYTES - ${#1}) / 3 * 3 ))
  printf '%s[' "$prefix"
  awk -v n=$((fill / 3)) 'BEGIN { for (i = 0; i < n; i++) printf "[]," }'
  printf '[]]}'
}
empty_fields_form() {  # username=x&password=y&f0=&f1=... of about BODY_BYTES
  awk -v n="$BODY_BYTES" 'BEGIN { s = "username=x&password=y"; printf "%s", s; len = length(s)
    for (i = 0; len < n; i++) { f = "&f" i "="; printf "%s", f; len += length(f) } }'
}

# ---- an account, a session and a chat --------------------------------------------------------------
curl -s -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"username\":\"$USERNAME\",\"email\":\"$USERNAME@example.com\",\"password\":\"$PASSWORD\"}" "$API/auth/register"
token="$(curl -s --data-urlencode "username=$USERNAME" --data-urlencode "password=$PASSWORD" "$API/auth/login" \
  | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4)"
[ -n "$token" ] || { echo "bodies: login as $USERNAME failed" >&2; exit 1; }
chat_id="$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"title":"bodies"}' \
  "$API/chats/my" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)"
[ -n "$chat_id" ] || { echo "bodies: creating a chat failed" >&2; exit 1; }

empty_lists_json '{"username":"x","extended":' >"$dir/register.json"
empty_fields_form >"$dir/login.form"
empty_lists_json '{"preferences":{"a":' >"$dir/settings.json"
empty_lists_json '{"role":"user","content":"x","extended":' >"$dir/messages.json"
empty_lists_json '{"model":"llama3.2:1b","extended":' >"$dir/completions.json"

rss_before=$(( $(hwm_kib) / 1024 ))

# ---- 16 at once per route ------------------------------------------------------------------------
send() {  # name method path content-type file
  local name=$1 method=$2 path=$3 type=$4 file=$5 i pids=()
  for i in $(seq 1 "$PARALLEL"); do
    # -T streams the file; "Expect:" off, so the body is sent without waiting for a go-ahead.
    local chunked=()
    [ $((i % 2)) = 0 ] && chunked=(-H 'Transfer-Encoding: chunked')
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 120 -X "$method" -T "$file" "${chunked[@]}" \
      -H 'Expect:' -H "Content-Type: $type" -H "Authorization: Bearer $token" "$API$path" \
      >"$dir/$name.$i.status" 2>/dev/null &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
  cat "$dir/$name".*.status | sort | uniq -c | awk '{printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1}'
}
declare -A statuses=()
statuses[register]=$(send register POST /auth/register application/json "$dir/register.json")
statuses[login]=$(send login POST /auth/login application/x-www-form-urlencoded "$dir/login.form")
statuses[settings]=$(send settings PUT /user-settings/me application/json "$dir/settings.json")
statuses[messages]=$(send messages POST "/chats/$chat_id/messages" application/json "$dir/messages.json")
statuses[completions]=$(send completions POST "/chats/$chat_id/completions" application/json "$dir/completions.json")

peak_mib=$(( $(hwm_kib) / 1024 ))
peak_mb=$(awk -v m="$peak_mib" 'BEGIN { printf "%.0f", m * 1.048576 }')
met=$(awk -v m="$peak_mb" -v l="$LIMIT_MB" 'BEGIN { print (m < l ? "yes" : "no") }')
unexpected=$(cat "$dir"/*.status | grep -cvE '^(413|422|000)$' || true)
rm -f "$dir"/*.json "$dir"/*.form
printf 'RESULT rss_before_mib=%s peak_rss_mib=%s peak_rss_mb=%s limit_mb=%s met=%s unexpected=%s' \
  "$rss_before" "$peak_mib" "$peak_mb" "$LIMIT_MB" "$met" "$unexpected"
for name in register login settings messages completions; do printf ' %s=%s' "$name" "${statuses[$name]}"; done
echo
