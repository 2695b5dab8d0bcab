-- Personal API keys for the OpenAI-compatible API: only a SHA-256 of each key is kept.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users(id),
    name character varying(100) NOT NULL,
    key_hash character(64) NOT NULL UNIQUE,
    prefix character varying(16) NOT NULL,
    models json,
    tokens_per_day bigint,
    created_at timestamp without time zone NOT NULL,
    expires_at timestamp without time zone,
    last_used_at timestamp without time zone,
    revoked_at timestamp without time zone
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

-- One row per generation (usage, quotas, and later the replicas' shared view). No foreign keys:
-- a row outlives its chat, key and user.
CREATE TABLE generations (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    api_key_id uuid,
    chat_id uuid,
    model character varying(255) NOT NULL,
    provider character varying(100),
    status character varying(20) NOT NULL,
    started_at timestamp without time zone NOT NULL,
    ended_at timestamp without time zone,
    first_token_ms bigint,
    duration_ms bigint,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0
);
CREATE INDEX generations_user_started_idx ON generations (user_id, started_at);
CREATE INDEX generations_started_idx ON generations (started_at);
CREATE INDEX generations_key_started_idx ON generations (api_key_id, started_at) WHERE api_key_id IS NOT NULL;
