-- Portable between SQLite and PostgreSQL: TEXT ids made by the hub, BIGINT for counters and
-- times (milliseconds since the Unix epoch), no engine-specific types.

CREATE TABLE admin_tokens (
    id BIGINT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    max_nodes BIGINT NOT NULL,
    policy TEXT NOT NULL,
    cpu_threshold BIGINT NOT NULL,
    memory_threshold BIGINT NOT NULL,
    aggregation_minutes BIGINT NOT NULL,
    queue_timeout_seconds BIGINT NOT NULL,
    encryption BIGINT NOT NULL,
    primary_key_hash TEXT NOT NULL,
    primary_key_hint TEXT NOT NULL,
    primary_key_created_ms BIGINT NOT NULL,
    secondary_key_hash TEXT NOT NULL,
    secondary_key_hint TEXT NOT NULL,
    secondary_key_created_ms BIGINT NOT NULL,
    gateway_secret TEXT NOT NULL,
    lease_node_id TEXT,
    lease_expires_ms BIGINT NOT NULL,
    lease_epoch BIGINT NOT NULL,
    registrations BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    machine_id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    version TEXT NOT NULL,
    peer_address TEXT NOT NULL,
    encryption_thumbprint TEXT,
    registered_order BIGINT NOT NULL,
    registered_ms BIGINT NOT NULL,
    last_heartbeat_ms BIGINT,
    metrics TEXT NOT NULL,
    UNIQUE (gateway_id, name)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX jobs_by_gateway ON jobs (gateway_id, created_ms);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    gateway_id TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    activity_index BIGINT NOT NULL,
    partition_index BIGINT NOT NULL,
    activity TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    node_id TEXT,
    node_name TEXT,
    progress TEXT,
    result TEXT,
    error TEXT,
    queued_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    finished_ms BIGINT,
    UNIQUE (job_id, activity_index, partition_index)
);
CREATE INDEX runs_queue ON runs (gateway_id, state, seq);
CREATE INDEX runs_by_node ON runs (node_id, state);

-- Every attempt that ended (finished, or lost with its node), so history keeps each node.
CREATE TABLE run_attempts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    node_id TEXT,
    node_name TEXT,
    outcome TEXT NOT NULL,
    error TEXT,
    ended_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, attempt)
);
