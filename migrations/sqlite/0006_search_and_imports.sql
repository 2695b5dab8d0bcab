-- Full-text search of chat titles and message contents (FTS5), and the sources of imported
-- chats (see the PostgreSQL migration).
--
-- External-content FTS5 tables: they index `chats.title` and `messages.content` by rowid without
-- a second copy of the text, and the triggers below keep them current in the same transaction
-- as every write. `remove_diacritics 2` folds accents (Zürich = zurich), the tokenizer case.
CREATE VIRTUAL TABLE chats_search USING fts5(title, content = 'chats', tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE messages_search USING fts5(content, content = 'messages', tokenize = 'unicode61 remove_diacritics 2');

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

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_search (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER messages_search_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_search (messages_search, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO messages_search (rowid, content) VALUES (new.rowid, new.content);
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
