-- Account names are unique ignoring case and compatibility forms. Each account's keys (computed
-- by rovertchat, see src/names.rs) live in a table of their own, so the original's `users` table
-- stays as it was. Every change of a name writes its key; accounts without keys (written by the
-- original backend, or whose name collides with an older account's) are keyed at startup.
CREATE TABLE name_keys (
    user_id uuid PRIMARY KEY REFERENCES users(id),
    username_key text UNIQUE,
    email_key text UNIQUE
);
-- Finds the original's bcrypt hashes while any remain (failed logins then cost a bcrypt check).
CREATE INDEX users_bcrypt_hash_idx ON users (id) WHERE password_hash LIKE '$2%';
