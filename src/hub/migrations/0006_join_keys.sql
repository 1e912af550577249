-- Auth keys made for adding nodes (`hub key create`, the window's Add a node), beside a
-- gateway's two standing keys: each expires (`expires_ms`), and a one-time key (`once` = 1)
-- registers a single node. Only the hash of a key is kept, with its public start (`hint`).
-- `used_count`, `last_used_ms`, `last_used_by` (a node name) tell the admin what became of it.
-- Rows go with their gateway, and are dropped a week after they expire. (No semicolons in
-- comments: statements are split on them.)
CREATE TABLE join_keys (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    once BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    used_count BIGINT NOT NULL DEFAULT 0,
    last_used_ms BIGINT,
    last_used_by TEXT
);
CREATE INDEX join_keys_by_gateway ON join_keys (gateway_id, created_ms)
