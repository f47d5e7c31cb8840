-- A ring collective's flows (JSON: ip_protocol, first_port); its members
-- are the job's sources in ring order. NULL for other jobs.
ALTER TABLE jobs ADD COLUMN collective_json TEXT;
