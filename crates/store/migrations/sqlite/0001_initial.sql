-- pedm schema, SQLite dialect. Kept column-for-column identical to migrations/postgres so one
-- set of queries serves both. Timestamps are BIGINT microseconds since the Unix epoch; UUIDs are
-- hyphenated TEXT; labels, request context and audit data are JSON text.

CREATE TABLE users (
    name         TEXT PRIMARY KEY,
    display_name TEXT,
    admin        BOOLEAN NOT NULL,
    disabled     BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE TABLE groups (
    name        TEXT PRIMARY KEY,
    description TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_name TEXT NOT NULL REFERENCES groups (name),
    user_name  TEXT NOT NULL REFERENCES users (name),
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX group_members_user ON group_members (user_name);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL REFERENCES users (name),
    description TEXT,
    secret_hash BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX tokens_user ON tokens (user_name, created_at);

CREATE TABLE targets (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    description TEXT,
    labels      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE roles (
    target            TEXT NOT NULL REFERENCES targets (name),
    name              TEXT NOT NULL,
    description       TEXT,
    max_duration_secs BIGINT NOT NULL,
    auto_approve      BOOLEAN NOT NULL,
    run_as            TEXT,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (target, name)
);

-- Requests and grants copy the names they refer to and carry no foreign keys to users,
-- targets or roles: they are history and must stay readable whatever happens to those.
CREATE TABLE requests (
    id                 TEXT PRIMARY KEY,
    requester          TEXT NOT NULL,
    target             TEXT NOT NULL,
    role               TEXT NOT NULL,
    duration_secs      BIGINT NOT NULL,
    justification      TEXT NOT NULL,
    task               TEXT,
    ticket             TEXT,
    context            TEXT NOT NULL,
    state              TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    pending_until      BIGINT NOT NULL,
    decided_at         BIGINT,
    decided_by         TEXT,
    decision_reason    TEXT,
    grant_id           TEXT,
    approvals_required BIGINT NOT NULL,
    version            BIGINT NOT NULL
);
CREATE INDEX requests_requester ON requests (requester, created_at);
CREATE INDEX requests_created ON requests (created_at);
CREATE INDEX requests_pending_until ON requests (pending_until) WHERE state = 'pending';

CREATE TABLE approvals (
    request_id TEXT NOT NULL REFERENCES requests (id),
    approver   TEXT NOT NULL,
    decision   TEXT NOT NULL,
    comment    TEXT,
    at         BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver)
);

CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE REFERENCES requests (id),
    user_name  TEXT NOT NULL,
    target     TEXT NOT NULL,
    role       TEXT NOT NULL,
    starts_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    state      TEXT NOT NULL,
    ended_at   BIGINT,
    ended_by   TEXT,
    end_reason TEXT
);
CREATE INDEX grants_user ON grants (user_name, starts_at);
CREATE INDEX grants_starts ON grants (starts_at);
CREATE INDEX grants_expires_active ON grants (expires_at) WHERE state = 'active';

CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    subject   TEXT,
    data      TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX audit_events_actor ON audit_events (actor);
CREATE INDEX audit_events_action ON audit_events (action);
CREATE INDEX audit_events_subject ON audit_events (subject);
CREATE INDEX audit_events_at ON audit_events (at);

-- The chain head: every commit that appends events reads and updates this one row inside its
-- transaction, so appends are serialised and the chain cannot fork.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
