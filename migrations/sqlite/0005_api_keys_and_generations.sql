-- Personal API keys for the OpenAI-compatible API (see the PostgreSQL migration).
CREATE TABLE api_keys (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL REFERENCES users(id),
    name VARCHAR(100) NOT NULL,
    key_hash CHAR(64) NOT NULL UNIQUE,
    prefix VARCHAR(16) NOT NULL,
    models TEXT,
    tokens_per_day BIGINT,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

CREATE TABLE generations (
    id BLOB PRIMARY KEY,
    user_id BLOB NOT NULL,
    api_key_id BLOB,
    chat_id BLOB,
    model VARCHAR(255) NOT NULL,
    provider VARCHAR(100),
    status VARCHAR(20) NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    first_token_ms BIGINT,
    duration_ms BIGINT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX generations_user_started_idx ON generations (user_id, started_at);
CREATE INDEX generations_started_idx ON generations (started_at);
CREATE INDEX generations_key_started_idx ON generations (api_key_id, started_at) WHERE api_key_id IS NOT NULL;
