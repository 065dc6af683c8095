-- Tasks (admin-defined privileged operations, the definition kept as JSON), delegations (who
-- may run which tasks and be granted which roles without approvers, where, until when; a
-- re-delegation names its parent) and the links of grants that a delegation pre-approved or
-- that were handed on from another grant (they end with it). Identical in both dialects.

CREATE TABLE tasks (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    defined_at BIGINT NOT NULL,
    defined_by TEXT NOT NULL
);

CREATE TABLE delegations (
    id            TEXT PRIMARY KEY,
    parent_id     TEXT REFERENCES delegations (id),
    delegator     TEXT NOT NULL,
    delegate_kind TEXT NOT NULL,
    delegate_name TEXT NOT NULL,
    tasks         TEXT NOT NULL,
    roles         TEXT NOT NULL,
    scope         TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    redelegate    BOOLEAN NOT NULL,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_by    TEXT,
    revoke_reason TEXT
);
CREATE INDEX delegations_parent ON delegations (parent_id);
CREATE INDEX delegations_live ON delegations (expires_at) WHERE revoked_at IS NULL;

CREATE TABLE grant_links (
    grant_id        TEXT PRIMARY KEY REFERENCES grants (id),
    delegation_id   TEXT REFERENCES delegations (id),
    parent_grant_id TEXT REFERENCES grants (id)
);
CREATE INDEX grant_links_delegation ON grant_links (delegation_id);
CREATE INDEX grant_links_parent ON grant_links (parent_grant_id);
