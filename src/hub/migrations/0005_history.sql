-- Run history and the audit trail. `started_ms`: when the current attempt's node started the
-- run (NULL while it waits), copied into `run_attempts` when the attempt ends, so every attempt
-- has its node, start, end, outcome and reason. `rerun_of`: the job a `job rerun` came from.
-- `audit`: who did what at the hub and when, never with a secret in it, kept when the gateway
-- it names is deleted (so no foreign key). `tokens`: tokens the admin makes for one purpose
-- (kind `metrics`: scraping /metrics), stored as hashes, revocable. (No semicolons in comments: statements are split
-- on them.)
ALTER TABLE runs ADD COLUMN started_ms BIGINT;
ALTER TABLE run_attempts ADD COLUMN started_ms BIGINT;
ALTER TABLE jobs ADD COLUMN rerun_of TEXT;
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    gateway_id TEXT,
    gateway_name TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX audit_by_gateway ON audit (gateway_id, at_ms);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
)
