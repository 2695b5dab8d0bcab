-- Full-text search of chat titles and message contents (FTS5), and the sources of imported
-- chats (see the PostgreSQL migration).
--
-- External-content FTS5 tables: they index `chats.title` and `messages.content` by rowid without
-- a second copy of the text, and the triggers below keep them current in the same transaction
-- as every write. `remove_diacritics 2` folds accents (Zürich = zurich), the tokenizer case.
-- Each message is also indexed with its owner's id as a word of its own (column `owner`), so a
-- search intersects a word's entries with the searcher's instead of reading every user's.
CREATE VIRTUAL TABLE chats_search USING fts5(title, content = 'chats', tokenize = 'unicode61 remove_diacritics 2');
CREATE VIEW messages_search_source AS
    SELECT m.rowid AS rowid, m.content AS content, lower(hex(c.user_id)) AS owner
    FROM messages m JOIN chats c ON c.id = m.chat_id;
CREATE VIRTUAL TABLE messages_search USING fts5(
    content, owner, content = 'messages_search_source', tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER chats_search_insert AFTER INSERT ON chats BEGIN
    INSERT INTO chats_search (rowid, title) VALUES (new.rowid, new.title);
END;
CREATE TRIGGER chats_search_delete AFTER DELETE ON chats BEGIN
    INSERT INTO chats_search (chats_search, rowid, title) VALUES ('delete', old.rowid, old.title);
END;
CREATE TRIGGER chats_search_update AFTER UPDATE OF title ON chats BEGIN
    INSERT INTO chats_search (chats_search, rowid, title) VALUES ('delete', old.rowid, old.title);
    INSERT INTO chats_search (rowid, title) VALUES (new.rowid, new.title);
END;

-- A chat's messages are deleted before the chat (the store does so), so the owner is still known.
CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_search (rowid, content, owner)
    VALUES (new.rowid, new.content, (SELECT lower(hex(user_id)) FROM chats WHERE id = new.chat_id));
END;
CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content, owner)
    VALUES ('delete', old.rowid, old.content, (SELECT lower(hex(user_id)) FROM chats WHERE id = old.chat_id));
END;
CREATE TRIGGER messages_search_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content, owner)
    VALUES ('delete', old.rowid, old.content, (SELECT lower(hex(user_id)) FROM chats WHERE id = old.chat_id));
    INSERT INTO messages_search (rowid, content, owner)
    VALUES (new.rowid, new.content, (SELECT lower(hex(user_id)) FROM chats WHERE id = new.chat_id));
END;

-- What was written before this migration.
INSERT INTO chats_search (chats_search) VALUES ('rebuild');
INSERT INTO messages_search (messages_search) VALUES ('rebuild');

CREATE TABLE chat_imports (
    chat_id BLOB PRIMARY KEY REFERENCES chats(id) ON DELETE CASCADE,
    user_id BLOB NOT NULL REFERENCES users(id),
    source TEXT NOT NULL,
    UNIQUE (user_id, source)
);
