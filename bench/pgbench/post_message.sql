-- What POST /api/v1/chats/{id}/messages runs: the auth lookup, then one transaction that moves
-- the chat's updated_at (only if it is the user's) and inserts the message.
-- pgbench -M prepared -D uid=<user id> -D cid=<chat id>
SELECT id, username, email, password_hash, role, created_at, last_login, is_active, token_version FROM users WHERE id = :uid;
BEGIN;
UPDATE chats SET updated_at = now() WHERE id = :cid AND user_id = :uid;
INSERT INTO messages (id, chat_id, role, content, thinking, tool_calls, images, model_id, created_at, tokens_used, extended_metadata) VALUES (gen_random_uuid(), :cid, 'user', E'Benchmark message: hello, world! \u00e9\u2713 \U0001F680\nsecond line', NULL, NULL, NULL, NULL, now(), 0, NULL) RETURNING id, chat_id, role, content, thinking, tool_calls, images, model_id, created_at, tokens_used, extended_metadata;
COMMIT;
