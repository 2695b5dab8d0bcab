-- What rovertchat adds to the original schema. Only additions (indexes), so the original
-- backend can still run on an adopted database.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX chats_user_updated_idx ON chats (user_id, updated_at DESC);
CREATE INDEX messages_chat_created_idx ON messages (chat_id, created_at);
