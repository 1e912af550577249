-- The credential manager (`gatehouse credential set|delete --gateway G` from any machine).
-- `sealed_credentials`: a credential (or its deletion) sealed on the admin machine for one
-- node, to that node's X25519 key, handed to the node with its heartbeat answers until it
-- reports holding that version (then the row is deleted). The hub can't open it: only
-- ciphertext is stored, one row per node and name (a newer version replaces an older one).
-- `nodes.key_proof`: the node's X25519 key signed with its certificate's key (JSON, with the
-- chain), for gateways that encrypt, and `key_proof_thumbprint` the certificate it came with.
-- `tokens.gateway_id`: the gateway a credential-manager token is for.
-- (No semicolons in comments: statements are split on them.)
CREATE TABLE sealed_credentials (
    node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    gateway_id TEXT NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, name)
);
CREATE INDEX sealed_credentials_by_gateway ON sealed_credentials (gateway_id, name);
ALTER TABLE nodes ADD COLUMN key_proof TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN key_proof_thumbprint TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN gateway_id TEXT
