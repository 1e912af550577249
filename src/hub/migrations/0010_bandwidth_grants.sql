-- The gateway-wide bandwidth limit is in megabits per second (Mbit/s, 125,000 bytes a second),
-- as network links are rated. It was in megabytes: existing limits are multiplied by 8, so
-- every gateway keeps the rate it had.
-- Each node's grant of that limit (bytes a second) and until when the hub counts it held, so
-- the grants of all nodes never add up to more than the limit, even while they change.
UPDATE gateways SET bandwidth_limit_mbps = bandwidth_limit_mbps * 8;
ALTER TABLE nodes ADD COLUMN bandwidth_grant BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN bandwidth_grant_until_ms BIGINT NOT NULL DEFAULT 0
