#!/usr/bin/env bash
# Search, export and import at scale: search latency over MESSAGES messages (USER_MESSAGES of them
# the searcher's), NDJSON export throughput and the server's memory meanwhile, and the import of
# a ChatGPT file of IMPORT_CONVERSATIONS conversations of IMPORT_TURNS messages each.
#
#   API=http://127.0.0.1:18080/api/v1 SERVER_PID=<pid> BACKEND=postgres PG_DB=<database> bench/search.sh
#   API=... SERVER_PID=<pid> BACKEND=sqlite SQLITE_DB=<DATA_DIR>/rovertchat.db bench/search.sh
#
# Called by bench/run.sh on a freshly started server (one per backend); runs alone against any
# server this machine started, on an empty database (it reads /proc/SERVER_PID/status). The
# server needs RATE_LIMITS=off. The messages are written straight into the database (the API
# would take hours for a million): sentences of 10 words drawn from a 20,000-word vocabulary with
# a Zipf-like law, two sentences per message. The search indexes are built by the database as in
# production (PostgreSQL: the trigger fills message_words, whose indexes but its key are dropped for
# the load and created again from their own definitions; SQLite: the triggers are dropped for the load, then
# FTS5's 'rebuild', then the triggers again as the migration made them). Needs python3.
#
# Queries (QUERY_RUNS times each, one at a time, after one warm-up): a word of frequency rank 3
# (in most messages), rank 100, rank 3,000 and rank 18,000 (rare), the first 3 letters of the rank
# 100 word (a prefix), and a two-word phrase.
#
# Prints one line: RESULT backend=.. messages=.. user_messages=.. search_p50_ms=.. search_p99_ms=..
#   p99_rank3_ms=.. p99_rank100_ms=.. p99_rank3000_ms=.. p99_rank18000_ms=.. p99_prefix_ms=.. p99_phrase_ms=..
#   export_mb=.. export_s=.. export_mb_s=.. rss_before_export_mib=.. rss_peak_export_mib=..
#   import_conversations=.. import_messages=.. import_s=.. imported=.. import_again_s=.. skipped=..
set -euo pipefail

API="${API:?API=http://host:port/api/v1}"
SERVER_PID="${SERVER_PID:?SERVER_PID=<pid of the server>}"
BACKEND="${BACKEND:?BACKEND=postgres|sqlite}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
MESSAGES="${MESSAGES:-1000000}"
USER_MESSAGES="${USER_MESSAGES:-100000}"
PER_CHAT="${PER_CHAT:-20}"
QUERY_RUNS="${QUERY_RUNS:-30}"
IMPORT_CONVERSATIONS="${IMPORT_CONVERSATIONS:-1000}"
IMPORT_TURNS="${IMPORT_TURNS:-20}"
PASSWORD="${SEARCH_PASS:-Bench-pass-2024!}"
dir="$OUT_DIR/search-$BACKEND"
mkdir -p "$dir"
[ -r "/proc/$SERVER_PID/status" ] || { echo "search: no process $SERVER_PID" >&2; exit 1; }
log() { echo "[search $(date +%H:%M:%S)] $*" >&2; }
status_kib() { awk -v k="$1:" '$1==k{print $2}' "/proc/$SERVER_PID/status"; }

login() {  # user -> access token
  local user=$1
  curl -s -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"username\":\"$user\",\"email\":\"$user@example.com\",\"password\":\"$PASSWORD\"}" "$API/auth/register"
  curl -s --data-urlencode "username=$user" --data-urlencode "password=$PASSWORD" "$API/auth/login" \
    | grep -o '"access_token":"[^"]*"' | cut -d'"' -f4
}
user_id() { curl -s -H "Authorization: Bearer $1" "$API/users/me" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4; }

token=$(login search_user); others_token=$(login search_others); import_token=$(login import_user)
[ -n "$token" ] && [ -n "$others_token" ] && [ -n "$import_token" ] || { echo "search: login failed" >&2; exit 1; }
owner=$(user_id "$token"); others=$(user_id "$others_token")

# ---- the corpus: vocabulary, sentences, the queries, a ChatGPT export ------------------------------
python3 - "$dir" "$IMPORT_CONVERSATIONS" "$IMPORT_TURNS" <<'PY'
import json, math, random, sys
out, conversations, turns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(16)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab, seen = [], set()
while len(vocab) < 20000:
    w = "".join(rng.choice(letters) for _ in range(rng.randint(4, 9)))
    if w not in seen:
        seen.add(w); vocab.append(w)
def word():  # rank r with probability ~ 1/r
    return vocab[min(len(vocab) - 1, int(math.exp(rng.random() * math.log(len(vocab)))) - 1)]
sentences = [" ".join(word() for _ in range(10)) for _ in range(10000)]
with open(f"{out}/sentences.tsv", "w") as f:
    for i, s in enumerate(sentences):
        f.write(f"{i}\t{s}\n")
queries = [("rank3", vocab[2]), ("rank100", vocab[99]), ("rank3000", vocab[2999]), ("rank18000", vocab[17999]),
           ("prefix", vocab[99][:3]), ("phrase", '"' + " ".join(sentences[42].split()[:2]) + '"')]
with open(f"{out}/queries.tsv", "w") as f:
    for name, q in queries:
        f.write(f"{name}\t{q}\n")
convs = []
for c in range(conversations):
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["m0"]}}
    for t in range(turns):
        node = f"m{t}"
        mapping[node] = {"id": node, "parent": "root" if t == 0 else f"m{t-1}", "children": [f"m{t+1}"] if t + 1 < turns else [],
                         "message": {"id": node, "author": {"role": "user" if t % 2 == 0 else "assistant"},
                                     "create_time": 1718000000 + c * 1000 + t, "content": {"content_type": "text",
                                     "parts": [sentences[rng.randrange(10000)] + ". " + sentences[rng.randrange(10000)]]},
                                     "metadata": {"model_slug": "gpt-4o"} if t % 2 else {}, "recipient": "all"}}
    convs.append({"id": f"conv-{c}", "title": " ".join(sentences[c % 10000].split()[:4]), "create_time": 1718000000 + c * 1000,
                  "update_time": 1718000000 + c * 1000 + turns, "current_node": f"m{turns-1}", "mapping": mapping})
with open(f"{out}/conversations.json", "w") as f:
    json.dump(convs, f)
PY

# ---- the messages, straight into the database ------------------------------------------------------
load_started=$(date +%s.%N)
if [ "$BACKEND" = postgres ]; then
  PG_DB="${PG_DB:?PG_DB=<database of the server>}"
  index_defs=$(psql -d "$PG_DB" -Atc "select string_agg(indexdef, ';' || chr(10)) from pg_indexes
    where tablename = 'message_words' and indexname <> 'message_words_pkey'")
  index_names=$(psql -d "$PG_DB" -Atc "select string_agg(indexname, ', ') from pg_indexes
    where tablename = 'message_words' and indexname <> 'message_words_pkey'")
  [[ "$index_names" == *message_words_idx* ]] || { echo "search: no message_words_idx" >&2; exit 1; }
  psql -q -v ON_ERROR_STOP=1 -d "$PG_DB" <<SQL
CREATE TEMP TABLE sentences (s int PRIMARY KEY, text text);
\copy sentences FROM '$dir/sentences.tsv'
DROP INDEX $index_names;
CREATE TEMP TABLE owners AS SELECT '$owner'::uuid AS user_id, $USER_MESSAGES AS messages
  UNION ALL SELECT '$others'::uuid, $MESSAGES - $USER_MESSAGES;
INSERT INTO chats (id, user_id, title, created_at, updated_at, is_archived)
  SELECT gen_random_uuid(), o.user_id, left(s.text, 40), now() - interval '1 minute' * c, now() - interval '1 minute' * c, false
  FROM owners o, generate_series(0, o.messages / $PER_CHAT - 1) c JOIN sentences s ON s.s = (c * 31) % 10000;
INSERT INTO messages (id, chat_id, role, content, created_at, tokens_used)
  SELECT gen_random_uuid(), c.id, CASE WHEN j % 2 = 0 THEN 'user' ELSE 'assistant' END, s1.text || '. ' || s2.text,
         c.created_at + interval '1 second' * j, 0
  FROM (SELECT id, created_at, row_number() OVER (ORDER BY id) AS r FROM chats) c, generate_series(0, $PER_CHAT - 1) j
  JOIN sentences s1 ON true JOIN sentences s2 ON true
  WHERE s1.s = ((c.r * $PER_CHAT + j) * 7919) % 10000 AND s2.s = ((c.r * $PER_CHAT + j) * 104729 + 17) % 10000;
SET maintenance_work_mem = '512MB';
$index_defs;
VACUUM ANALYZE chats;
VACUUM ANALYZE messages;
VACUUM ANALYZE message_words;
SQL
else
  SQLITE_DB="${SQLITE_DB:?SQLITE_DB=<DATA_DIR>/rovertchat.db of the server}"
  python3 - "$SQLITE_DB" "$dir/sentences.tsv" "$owner" "$others" "$MESSAGES" "$USER_MESSAGES" "$PER_CHAT" <<'PY'
import datetime, sqlite3, sys, uuid
db, sentences_file, owner, others, messages, user_messages, per_chat = sys.argv[1:4] + [sys.argv[4]] + [int(x) for x in sys.argv[5:]]
sentences = [line.rstrip("\n").split("\t", 1)[1] for line in open(sentences_file)]
con = sqlite3.connect(db, timeout=60)
triggers = con.execute("select sql from sqlite_master where type = 'trigger' and name like 'messages_search_%'").fetchall()
for (sql,) in triggers:
    con.execute("drop trigger " + sql.split()[2])
start = datetime.datetime(2026, 1, 1)
fmt = lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")
n = 0
for user, count in ((owner, user_messages), (others, messages - user_messages)):
    for c in range(count // per_chat):
        chat = uuid.uuid4().bytes
        at = start + datetime.timedelta(minutes=n)
        con.execute("insert into chats (id, user_id, title, created_at, updated_at, is_archived) values (?, ?, ?, ?, ?, 0)",
                    (chat, uuid.UUID(user).bytes, sentences[(c * 31) % 10000][:40], fmt(at), fmt(at)))
        rows = []
        for j in range(per_chat):
            k = n * per_chat + j
            rows.append((uuid.uuid4().bytes, chat, "user" if j % 2 == 0 else "assistant",
                         sentences[(k * 7919) % 10000] + ". " + sentences[(k * 104729 + 17) % 10000], fmt(at + datetime.timedelta(seconds=j))))
        con.executemany("insert into messages (id, chat_id, role, content, created_at, tokens_used) values (?, ?, ?, ?, ?, 0)", rows)
        n += 1
con.execute("insert into messages_search (messages_search) values ('rebuild')")
for (sql,) in triggers:
    con.execute(sql)
con.commit()
con.execute("analyze")
con.close()
PY
fi
load_s=$(awk -v a="$load_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
log "loaded $MESSAGES messages ($USER_MESSAGES of search_user) in ${load_s}s"

# ---- search latency ---------------------------------------------------------------------------------
: >"$dir/latencies.txt"
while IFS=$'\t' read -r name query; do
  url="$API/chats/search?q=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$query")"
  curl -s -o "$dir/answer-$name.json" -H "Authorization: Bearer $token" "$url"
  for _ in $(seq 1 "$QUERY_RUNS"); do
    curl -s -o /dev/null -w "$name %{http_code} %{time_total}\n" -H "Authorization: Bearer $token" "$url" >>"$dir/latencies.txt"
  done
  log "$name ($query): $(grep -o '"total":[0-9]*' "$dir/answer-$name.json")"
done <"$dir/queries.tsv"
percentile() {  # p, [class] -> ms
  awk -v c="${2:-}" '(c == "" || $1 == c) && $2 == 200 { print $3 * 1000 }' "$dir/latencies.txt" | sort -n \
    | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; printf "%.1f", v[i] }'
}
errors=$(awk '$2 != 200' "$dir/latencies.txt" | wc -l)

# ---- export: throughput and the server's memory ----------------------------------------------------
rss_before=$(( $(status_kib VmRSS) / 1024 ))
peak_file="$dir/export-rss.txt"; : >"$peak_file"
( while kill -0 "$SERVER_PID" 2>/dev/null; do status_kib VmRSS >>"$peak_file"; sleep 0.1; done ) &
sampler=$!
read -r export_bytes export_s < <(curl -s -o /dev/null -w '%{size_download} %{time_total}\n' -H "Authorization: Bearer $token" "$API/chats/export")
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
rss_peak=$(( $(sort -n "$peak_file" | tail -1) / 1024 ))
export_mb=$(awk -v b="$export_bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
export_mb_s=$(awk -v b="$export_bytes" -v s="$export_s" 'BEGIN { printf "%.1f", b / 1e6 / s }')
log "export: $export_mb MB in ${export_s}s = $export_mb_s MB/s; RSS $rss_before MiB before, peak $rss_peak MiB"

# ---- import of a ChatGPT export ----------------------------------------------------------------------
import_file="$dir/conversations.json"
read -r import_code import_s < <(curl -s -o "$dir/import.json" -w '%{http_code} %{time_total}\n' \
  -H "Authorization: Bearer $import_token" -H 'Content-Type: application/json' --data-binary "@$import_file" "$API/chats/import")
imported=$(grep -o '"imported":[0-9]*' "$dir/import.json" | cut -d: -f2 || echo 0)
read -r again_code again_s < <(curl -s -o "$dir/import-again.json" -w '%{http_code} %{time_total}\n' \
  -H "Authorization: Bearer $import_token" -H 'Content-Type: application/json' --data-binary "@$import_file" "$API/chats/import")
skipped=$(grep -o '"skipped":[0-9]*' "$dir/import-again.json" | cut -d: -f2 || echo 0)
log "import ($(du -h "$import_file" | cut -f1)): $import_code, $imported chats in ${import_s}s; again: $again_code, $skipped skipped in ${again_s}s"

echo "RESULT backend=$BACKEND messages=$MESSAGES user_messages=$USER_MESSAGES load_s=$load_s errors=$errors" \
  "search_p50_ms=$(percentile 50) search_p99_ms=$(percentile 99)" \
  "p99_rank3_ms=$(percentile 99 rank3) p99_rank100_ms=$(percentile 99 rank100) p99_rank3000_ms=$(percentile 99 rank3000)" \
  "p99_rank18000_ms=$(percentile 99 rank18000) p99_prefix_ms=$(percentile 99 prefix) p99_phrase_ms=$(percentile 99 phrase)" \
  "export_mb=$export_mb export_s=$export_s export_mb_s=$export_mb_s rss_before_export_mib=$rss_before rss_peak_export_mib=$rss_peak" \
  "import_conversations=$IMPORT_CONVERSATIONS import_messages=$((IMPORT_CONVERSATIONS * IMPORT_TURNS)) import_status=$import_code" \
  "import_s=$import_s imported=$imported import_again_s=$again_s skipped=$skipped"
