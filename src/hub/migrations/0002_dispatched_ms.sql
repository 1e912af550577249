-- When a run was handed out, so a hand-off that never started can go back to the queue.
ALTER TABLE runs ADD COLUMN dispatched_ms BIGINT;
