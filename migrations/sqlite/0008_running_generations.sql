-- Generations are written when they start (status 'running'), not only when they end, so that
-- every replica sharing the database sees them: who owns each one (owner_instance, a process id
-- made at start), whether that owner is alive (heartbeat_at, written every second), and the
-- answer so far (checkpoint, written at least every second while it grows). A replica that
-- finds a running generation whose heartbeat is too old ends it as 'interrupted' and stores
-- its checkpoint as the answer.
ALTER TABLE generations ADD COLUMN owner_instance BLOB;
ALTER TABLE generations ADD COLUMN heartbeat_at TEXT;
ALTER TABLE generations ADD COLUMN user_message_id BLOB;
ALTER TABLE generations ADD COLUMN message_id BLOB;
ALTER TABLE generations ADD COLUMN detail TEXT;
-- {"content", "thinking", "tool_calls"} as JSON text, and how many pieces it holds.
ALTER TABLE generations ADD COLUMN checkpoint TEXT;
ALTER TABLE generations ADD COLUMN checkpoint_pieces BIGINT NOT NULL DEFAULT 0;

-- At most one running generation per chat, whichever replica starts it.
CREATE UNIQUE INDEX generations_running_chat_idx ON generations (chat_id) WHERE status = 'running';
-- A user's running generations (the concurrency quota), and the sweep for dead owners.
CREATE INDEX generations_running_user_idx ON generations (user_id) WHERE status = 'running';

-- Login attempts per account (or per unknown name), counted in fixed windows in the database so
-- that every replica enforces one budget (RATE_LIMIT_LOGIN_PER_ACCOUNT). Expired windows are
-- pruned in the background.
CREATE TABLE login_attempts (
    subject VARCHAR(300) PRIMARY KEY,
    window_started_at TEXT NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX login_attempts_window_idx ON login_attempts (window_started_at);
