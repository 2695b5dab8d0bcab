-- Full-text search of chat titles and message contents, and the sources of imported chats.
--
-- The search indexes are expressions over the original's columns (no column is added, so the
-- original backend can still run on an adopted database), kept current by PostgreSQL in the
-- same transaction as every write. The `simple` configuration lowercases and does not stem,
-- so every language is found word by word. Only a message's first 100,000 characters are
-- indexed: a tsvector holds at most 1 MB, and a longer one would refuse the message's insert.
CREATE INDEX chats_title_search_idx ON chats USING gin (to_tsvector('simple', coalesce(title, '')));
CREATE INDEX messages_content_search_idx ON messages USING gin (to_tsvector('simple', left(content, 100000)));

-- Where an imported chat came from ("chatgpt:<id>", "open-webui:<id>", "rovertchat:<id>"), so
-- importing the same file again imports nothing new. Deleting the chat forgets its source.
CREATE TABLE chat_imports (
    chat_id uuid PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users(id),
    source text NOT NULL,
    CONSTRAINT chat_imports_user_source_key UNIQUE (user_id, source)
);
