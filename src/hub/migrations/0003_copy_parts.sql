-- Copy activities. `part`: the piece of a copy a partition run moves (JSON `protocol::Part`),
-- set when the listing run splits the source, NULL for every other run. `checkpoint`: what an
-- attempt committed (JSON, the node's), kept when the run goes back to the queue, so the next
-- attempt resumes instead of starting over. (No semicolons in comments: statements are split
-- on them.)
ALTER TABLE runs ADD COLUMN part TEXT;
ALTER TABLE runs ADD COLUMN checkpoint TEXT;
