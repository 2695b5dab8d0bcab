-- The audit log: who did what, from where, to what. Each row is written in the transaction of
-- the change it records (see src/store/audit.rs) and pruned after AUDIT_RETENTION_DAYS. No
-- foreign keys: a row must outlive the accounts (and API keys) it names.
CREATE TABLE audit_events (
    id uuid PRIMARY KEY,
    occurred_at timestamp without time zone NOT NULL,
    -- anonymous, user, api_key or cli
    actor_kind text NOT NULL,
    actor_user_id uuid,
    actor_api_key_id uuid,
    client_address text,
    action text NOT NULL,
    target_type text,
    target_id text,
    details jsonb NOT NULL
);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, occurred_at);
CREATE INDEX audit_events_action_idx ON audit_events (action, occurred_at);
