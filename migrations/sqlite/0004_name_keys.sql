-- Account names are unique ignoring case and compatibility forms (see the PostgreSQL migration).
CREATE TABLE name_keys (
    user_id BLOB PRIMARY KEY REFERENCES users(id),
    username_key TEXT UNIQUE,
    email_key TEXT UNIQUE
);
CREATE INDEX users_bcrypt_hash_idx ON users (id) WHERE password_hash LIKE '$2%';
