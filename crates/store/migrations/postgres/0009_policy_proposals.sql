-- Two-person control of policy changes: policy sets waiting for approval (proposals, numbered
-- in their own sequence, each on top of the policy version in force when proposed) and the
-- approvals they collected (one per approver). Identical in both dialects.

CREATE TABLE policy_proposals (
    id               BIGINT PRIMARY KEY,
    base_version     BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    comment          TEXT,
    digest           TEXT NOT NULL,
    sources          TEXT NOT NULL,
    diff             TEXT NOT NULL,
    required         BIGINT NOT NULL,
    state            TEXT NOT NULL,
    approvals        BIGINT NOT NULL DEFAULT 0,
    decided_at       BIGINT,
    decided_by       TEXT,
    decision_comment TEXT,
    applied_version  BIGINT
);
CREATE INDEX policy_proposals_state ON policy_proposals (state);

CREATE TABLE policy_proposal_approvals (
    proposal_id BIGINT NOT NULL REFERENCES policy_proposals (id),
    approver    TEXT NOT NULL,
    at          BIGINT NOT NULL,
    comment     TEXT,
    PRIMARY KEY (proposal_id, approver)
);
