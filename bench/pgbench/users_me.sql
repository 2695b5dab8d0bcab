-- What GET /api/v1/users/me runs: the auth lookup (the handler answers that user).
-- pgbench -M prepared -D uid=<user id>
SELECT id, username, email, password_hash, role, created_at, last_login, is_active, token_version FROM users WHERE id = :uid;
