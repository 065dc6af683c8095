-- Access reviews: campaigns and their items (see pedm_core::access_review). Identical in both
-- dialects. A campaign's name is unique; its stage moves forward only, each step once.
CREATE TABLE review_campaigns (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scope          TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    due_at         BIGINT NOT NULL,
    default_action TEXT NOT NULL,
    reviewers      TEXT NOT NULL,
    escalate_to    TEXT NOT NULL,
    unused_days    BIGINT NOT NULL,
    stage          TEXT NOT NULL,
    closed_at      BIGINT,
    proposal       BIGINT
);
CREATE INDEX review_campaigns_open ON review_campaigns (stage) WHERE stage <> 'closed';

CREATE TABLE review_items (
    id            TEXT PRIMARY KEY,
    campaign      TEXT NOT NULL REFERENCES review_campaigns (id),
    kind          TEXT NOT NULL,
    subject_user  TEXT NOT NULL,
    target        TEXT,
    role          TEXT,
    group_name    TEXT,
    delegation    TEXT,
    detail        TEXT NOT NULL,
    reviewer_kind TEXT NOT NULL,
    reviewer      TEXT NOT NULL,
    usage         TEXT NOT NULL,
    suggested     TEXT,
    state         TEXT NOT NULL,
    comment       TEXT,
    decided_by    TEXT,
    decided_at    BIGINT,
    outcome       TEXT
);
CREATE INDEX review_items_campaign ON review_items (campaign, state);
