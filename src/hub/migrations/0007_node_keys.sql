-- Per-node identities for the peer channel. `nodes.public_key`: the node's X25519 public key
-- (base64), which its peers pin and check against the roster the hub hands out with every
-- heartbeat answer, empty until a node registered by an older version announces one. The
-- hub keeps no private key of any node. The gateway's shared secret is gone: its values are
-- overwritten first, then the column is dropped (both engines drop columns in place).
-- (No semicolons in comments: statements are split on them.)
ALTER TABLE nodes ADD COLUMN public_key TEXT NOT NULL DEFAULT '';
UPDATE gateways SET gateway_secret = '';
ALTER TABLE gateways DROP COLUMN gateway_secret;
