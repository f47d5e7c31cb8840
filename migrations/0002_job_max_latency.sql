-- A job's latency bound for its paths (microseconds); NULL = the default.
ALTER TABLE jobs ADD COLUMN max_latency_us BIGINT;
