-- A job's explicit path and the packets it takes (JSON: path, ip_protocol,
-- destination_ports); NULL when the planner chooses.
ALTER TABLE jobs ADD COLUMN pin_json TEXT;
