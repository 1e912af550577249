-- A gateway-wide bandwidth limit for copies, in megabytes (1,000,000 bytes) per second,
-- shared by the nodes copying at the time. 0 turns it off, which every existing gateway keeps.
-- (No semicolons in comments: statements are split on them.)
ALTER TABLE gateways ADD COLUMN bandwidth_limit_mbps BIGINT NOT NULL DEFAULT 0;
