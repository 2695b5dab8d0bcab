-- Search ranks only the newest matches of a query (src/store/search.rs). A word found in most of
-- a user's messages is then read by walking their messages newest first until enough match,
-- which needs each message's owner, chat and time next to its words, and an index in that
-- order. The trigger keeps them as it keeps the words, for the original backend's writes too.
ALTER TABLE message_words
    ADD COLUMN user_id uuid,
    ADD COLUMN chat_id uuid,
    ADD COLUMN created_at timestamp without time zone;

-- The word index is built again rather than given a second entry for each row written here.
DROP INDEX message_words_idx;
UPDATE message_words w SET user_id = c.user_id, chat_id = m.chat_id, created_at = m.created_at
    FROM messages m LEFT JOIN chats c ON c.id = m.chat_id
    WHERE m.id = w.message_id;
CREATE INDEX message_words_idx ON message_words USING gin (words);

CREATE OR REPLACE FUNCTION message_words_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner uuid := (SELECT user_id FROM chats WHERE id = NEW.chat_id);
BEGIN
    INSERT INTO message_words (message_id, words, user_id, chat_id, created_at)
    VALUES (NEW.id, message_words_of(NEW.content, owner), owner, NEW.chat_id, NEW.created_at)
    ON CONFLICT (message_id) DO UPDATE
        SET words = EXCLUDED.words, user_id = EXCLUDED.user_id, chat_id = EXCLUDED.chat_id,
            created_at = EXCLUDED.created_at;
    RETURN NULL;
END $$;

DROP TRIGGER message_words_write ON messages;
CREATE TRIGGER message_words_write AFTER INSERT OR UPDATE OF content, chat_id, created_at ON messages
    FOR EACH ROW EXECUTE FUNCTION message_words_write();

CREATE INDEX message_words_newest_idx ON message_words (user_id, created_at DESC, message_id DESC);
