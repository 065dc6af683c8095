-- Hosts running pedm-agent, the reports their agents sent (ids, so a report is accepted once),
-- and the sessions they recorded. Column-for-column identical in both dialects.

CREATE TABLE hosts (
    name          TEXT PRIMARY KEY REFERENCES targets (name),
    token_id      TEXT NOT NULL UNIQUE,
    token_hash    BYTEA NOT NULL,
    registered_at BIGINT NOT NULL,
    registered_by TEXT NOT NULL,
    last_seen_at  BIGINT
);

CREATE TABLE agent_receipts (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL REFERENCES hosts (name),
    received_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    -- The grant it ran under; NULL for a delegated task (delegation_id, task, params).
    grant_id         TEXT REFERENCES grants (id),
    delegation_id    TEXT,
    task             TEXT,
    params           TEXT,
    host             TEXT NOT NULL REFERENCES hosts (name),
    user_name        TEXT NOT NULL,
    run_as           TEXT NOT NULL,
    argv             TEXT NOT NULL,
    binary_sha256    TEXT,
    shell            BOOLEAN NOT NULL,
    started_at       BIGINT NOT NULL,
    ended_at         BIGINT NOT NULL,
    exit_code        BIGINT,
    signal           BIGINT,
    ended_by         TEXT,
    recording_sha256 TEXT NOT NULL,
    recording_bytes  BIGINT NOT NULL,
    uploaded_at      BIGINT NOT NULL
);
CREATE INDEX sessions_grant ON sessions (grant_id);
CREATE INDEX sessions_user ON sessions (user_name, started_at);
CREATE INDEX sessions_host ON sessions (host, started_at);
