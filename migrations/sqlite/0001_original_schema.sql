-- The original's schema in SQLite types: uuids as 16-byte BLOBs, timestamps as UTC TEXT
-- ("YYYY-MM-DD HH:MM:SS.ffffff"), booleans as INTEGER, JSON as TEXT.
CREATE TABLE users (
    id BLOB NOT NULL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT CHECK (role IN ('guest', 'user', 'admin')),
    created_at TEXT,
    last_login TEXT,
    is_active INTEGER,
    token_version INTEGER NOT NULL
);

CREATE TABLE user_settings (
    user_id BLOB NOT NULL PRIMARY KEY REFERENCES users(id),
    default_model_id BLOB,
    display_name TEXT,
    avatar_url TEXT,
    preferences TEXT
);

CREATE TABLE chats (
    id BLOB NOT NULL PRIMARY KEY,
    user_id BLOB REFERENCES users(id),
    title TEXT,
    created_at TEXT,
    updated_at TEXT,
    is_archived INTEGER
);

CREATE TABLE model_providers (
    id BLOB NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    api_url TEXT NOT NULL,
    auth_type TEXT,
    created_by BLOB REFERENCES users(id),
    created_at TEXT,
    is_active INTEGER
);

CREATE TABLE models (
    id BLOB NOT NULL PRIMARY KEY,
    provider_id BLOB REFERENCES model_providers(id),
    name TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    config TEXT,
    created_at TEXT,
    updated_at TEXT,
    is_active INTEGER
);

CREATE TABLE messages (
    id BLOB NOT NULL PRIMARY KEY,
    chat_id BLOB REFERENCES chats(id),
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    thinking TEXT,
    tool_calls TEXT,
    images TEXT,
    model_id BLOB REFERENCES models(id),
    created_at TEXT,
    tokens_used INTEGER,
    extended_metadata TEXT
);

CREATE TABLE user_model_access (
    id BLOB NOT NULL PRIMARY KEY,
    user_id BLOB REFERENCES users(id),
    model_id BLOB REFERENCES models(id),
    granted_by BLOB REFERENCES users(id),
    granted_at TEXT,
    is_active INTEGER
);
