-- aiwan's initial schema. Portable SQL: it runs unchanged on SQLite and
-- PostgreSQL. Integers are BIGINT (i64 on both), times are Unix milliseconds,
-- keys are chosen by the controller (no engine-specific sequences).

-- Topology ------------------------------------------------------------------

-- One row: the revision counter the watchers follow.
CREATE TABLE topology_meta (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    display_name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE sites (
    site_id TEXT PRIMARY KEY
);

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    site_id TEXT REFERENCES sites (site_id),
    role TEXT NOT NULL
);

-- Prefixes a node originates; a site owns the union of its nodes' prefixes
-- plus the ones given to the site itself (node_id NULL).
CREATE TABLE prefixes (
    prefix TEXT NOT NULL,
    site_id TEXT REFERENCES sites (site_id),
    node_id TEXT REFERENCES nodes (node_id),
    PRIMARY KEY (prefix)
);

CREATE TABLE links (
    src_node TEXT NOT NULL REFERENCES nodes (node_id),
    src_interface TEXT NOT NULL,
    dst_node TEXT NOT NULL REFERENCES nodes (node_id),
    dst_interface TEXT NOT NULL,
    capacity_bps BIGINT NOT NULL CHECK (capacity_bps > 0),
    latency_us BIGINT NOT NULL CHECK (latency_us >= 0),
    admin_up BIGINT NOT NULL CHECK (admin_up IN (0, 1)),
    PRIMARY KEY (src_node, src_interface)
);

CREATE TABLE link_srlgs (
    src_node TEXT NOT NULL,
    src_interface TEXT NOT NULL,
    srlg TEXT NOT NULL,
    PRIMARY KEY (src_node, src_interface, srlg),
    FOREIGN KEY (src_node, src_interface) REFERENCES links (src_node, src_interface) ON DELETE CASCADE
);

-- AI jobs -------------------------------------------------------------------

CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    traffic_class TEXT NOT NULL,
    rate_bps BIGINT NOT NULL,
    volume_bytes BIGINT NOT NULL,
    deadline_ms BIGINT,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT,
    priority BIGINT NOT NULL,
    cancelled_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    creator TEXT NOT NULL
);

CREATE INDEX jobs_tenant ON jobs (tenant, job_id);

-- side is 'src' or 'dst'; exactly one of site_id and prefix is set.
CREATE TABLE job_endpoints (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    side TEXT NOT NULL CHECK (side IN ('src', 'dst')),
    position BIGINT NOT NULL,
    site_id TEXT,
    prefix TEXT,
    PRIMARY KEY (job_id, side, position),
    CHECK ((site_id IS NULL) <> (prefix IS NULL))
);

-- The demands a job expands into, one per source-destination pair.
CREATE TABLE demands (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    src_position BIGINT NOT NULL,
    dst_position BIGINT NOT NULL,
    rate_bps BIGINT NOT NULL CHECK (rate_bps > 0),
    PRIMARY KEY (job_id, src_position, dst_position)
);

-- Plans and desired state ----------------------------------------------------

CREATE TABLE plans (
    version BIGINT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    applied_ms BIGINT,
    mlu DOUBLE PRECISION,
    metrics_json TEXT NOT NULL,
    allocation_json TEXT NOT NULL,
    creator TEXT NOT NULL
);

-- What the controller wants each router to run, written before any push.
CREATE TABLE desired_state (
    node_id TEXT NOT NULL,
    plan_version BIGINT NOT NULL REFERENCES plans (version),
    state_json TEXT NOT NULL,
    push_status TEXT NOT NULL,
    pushed_ms BIGINT,
    PRIMARY KEY (node_id, plan_version)
);

-- Access and audit ------------------------------------------------------------

-- Only the SHA-256 of a secret is stored.
CREATE TABLE api_tokens (
    token_id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    description TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    creator TEXT NOT NULL,
    revoked_ms BIGINT
);

-- Append-only: the controller never updates or deletes a row.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
