-- Model providers (#14): the original's table, extended. `is_active` says whether a provider is
-- enabled, `api_url` is its base URL; both keep their original names so an adopted database works.
ALTER TABLE model_providers ADD COLUMN kind VARCHAR(10) NOT NULL DEFAULT 'ollama';
ALTER TABLE model_providers ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_providers ADD COLUMN model_prefix VARCHAR(50);
-- `v1:` and base64 of nonce + ChaCha20-Poly1305 ciphertext; never the key itself.
ALTER TABLE model_providers ADD COLUMN api_key_encrypted TEXT;
ALTER TABLE model_providers ADD COLUMN updated_at TEXT;

-- The original did not keep names unique: a later duplicate gets its id's start appended.
UPDATE model_providers SET name = substr(name, 1, 90) || '-' || substr(lower(hex(id)), 1, 8)
WHERE EXISTS (SELECT 1 FROM model_providers o WHERE o.name = model_providers.name AND o.id < model_providers.id);
CREATE UNIQUE INDEX model_providers_name_key ON model_providers (name);

-- The provider of a chat's last answer (a chat sticks to it).
CREATE INDEX generations_chat_started_idx ON generations (chat_id, started_at) WHERE chat_id IS NOT NULL;
