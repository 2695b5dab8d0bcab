-- Model providers (#14): the original's table, extended. `is_active` says whether a provider is
-- enabled, `api_url` is its base URL; both keep their original names so an adopted database works.
ALTER TABLE model_providers
    ADD COLUMN kind character varying(10) NOT NULL DEFAULT 'ollama',
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN model_prefix character varying(50),
    -- `v1:` and base64 of nonce + ChaCha20-Poly1305 ciphertext; never the key itself.
    ADD COLUMN api_key_encrypted text,
    ADD COLUMN updated_at timestamp without time zone;

-- The original did not keep names unique: a later duplicate gets its id's start appended.
UPDATE model_providers p SET name = left(p.name, 90) || '-' || left(p.id::text, 8)
WHERE EXISTS (SELECT 1 FROM model_providers o WHERE o.name = p.name AND o.id < p.id);
CREATE UNIQUE INDEX model_providers_name_key ON model_providers (name);

-- The provider of a chat's last answer (a chat sticks to it).
CREATE INDEX generations_chat_started_idx ON generations (chat_id, started_at) WHERE chat_id IS NOT NULL;
