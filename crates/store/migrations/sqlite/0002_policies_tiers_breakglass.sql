-- Approval tiers, determining policy, break-glass and its review on requests;
-- the tier an approval counted towards; versioned policy sets.
ALTER TABLE requests ADD COLUMN approval_tiers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN policy TEXT;
ALTER TABLE requests ADD COLUMN break_glass BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE requests ADD COLUMN review TEXT;
-- Copy of review.state, for the "unreviewed break-glass" list.
ALTER TABLE requests ADD COLUMN review_state TEXT;
CREATE INDEX requests_review_open ON requests (created_at) WHERE review_state = 'open';
CREATE INDEX requests_created_at ON requests (created_at);

ALTER TABLE approvals ADD COLUMN tier BIGINT NOT NULL DEFAULT 0;

CREATE TABLE policy_versions (
    version    BIGINT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment    TEXT,
    digest     TEXT NOT NULL,
    sources    TEXT NOT NULL
);
