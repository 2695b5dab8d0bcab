-- Full-text search of chat titles and message contents, and the sources of imported chats.
--
-- The `simple` configuration lowercases and does not stem, so every language is found word by
-- word. Everything here is kept current by PostgreSQL in the same transaction as each write
-- (also the original backend's, on an adopted database), and no column of the original's tables
-- changes.

-- Titles: an index over an expression.
CREATE INDEX chats_title_search_idx ON chats USING gin (to_tsvector('simple', coalesce(title, '')));

-- Messages: their words (weight A) and their owner as one more word (`owner<user id>`, weight D),
-- so a search intersects a word's entries with the searcher's instead of reading every user's.
-- Only a message's first 100,000 characters are indexed: a tsvector holds at most 1 MB, and a
-- longer one would refuse the message's insert.
CREATE FUNCTION message_words_of(content text, owner uuid) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT setweight(to_tsvector('simple', left(content, 100000)), 'A')
                 || coalesce(array_to_tsvector(ARRAY['owner' || replace(owner::text, '-', '')]), '') $$;

CREATE TABLE message_words (
    message_id uuid PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    words tsvector NOT NULL
);

CREATE FUNCTION message_words_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_words (message_id, words)
    VALUES (NEW.id, message_words_of(NEW.content, (SELECT user_id FROM chats WHERE id = NEW.chat_id)))
    ON CONFLICT (message_id) DO UPDATE SET words = EXCLUDED.words;
    RETURN NULL;
END $$;

CREATE TRIGGER message_words_write AFTER INSERT OR UPDATE OF content, chat_id ON messages
    FOR EACH ROW EXECUTE FUNCTION message_words_write();

-- What was written before this migration (on an adopted database: the original's messages).
INSERT INTO message_words (message_id, words)
    SELECT m.id, message_words_of(m.content, c.user_id) FROM messages m LEFT JOIN chats c ON c.id = m.chat_id;

CREATE INDEX message_words_idx ON message_words USING gin (words);

-- Where an imported chat came from ("chatgpt:<id>", "open-webui:<id>", "rovertchat:<id>"), so
-- importing the same file again imports nothing new. Deleting the chat forgets its source.
CREATE TABLE chat_imports (
    chat_id uuid PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES users(id),
    source text NOT NULL,
    CONSTRAINT chat_imports_user_source_key UNIQUE (user_id, source)
);
