-- The audit log: who did what, from where, to what. Each row is written in the transaction of
-- the change it records (see src/store/audit.rs) and pruned after AUDIT_RETENTION_DAYS. No
-- foreign keys: a row must outlive the accounts (and API keys) it names.
CREATE TABLE audit_events (
    id BLOB PRIMARY KEY,
    occurred_at TEXT NOT NULL,
    -- anonymous, user, api_key or cli
    actor_kind TEXT NOT NULL,
    actor_user_id BLOB,
    actor_api_key_id BLOB,
    client_address TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, occurred_at);
CREATE INDEX audit_events_action_idx ON audit_events (action, occurred_at);
