-- Releases for `node update` (`hub release publish`): one row per version and platform, its
-- file in 1 MiB-to-4 MiB pieces (`release_parts`, in order of `seq`), its SHA-256 (hex) and the
-- ed25519 signature (one line) the hub checked against a key it trusts before it took the
-- first piece. `published` = 0 while the pieces are still coming: such a release is offered
-- to no node, and a publish of the same version and platform replaces it.
-- `update_slots`: the one node of a gateway allowed to update now (granted in a heartbeat
-- answer, renewed by its beats while it updates, free again when it beats on without asking,
-- or at `expires_ms`), so a gateway updates one node at a time.
-- (No semicolons in comments: statements are split on them.)
CREATE TABLE releases (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    platform TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL,
    published BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    UNIQUE (version, platform)
);
CREATE TABLE release_parts (
    release_id TEXT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (release_id, seq)
);
CREATE TABLE update_slots (
    gateway_id TEXT PRIMARY KEY REFERENCES gateways(id) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
)
