-- Provisioning: whether a grant's privilege is in its target, the durable jobs that switch it
-- on and off, and the one-time secrets (generated passwords) waiting for the grant holder.
ALTER TABLE grants ADD COLUMN provision_state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE grants ADD COLUMN provision_detail TEXT;

CREATE TABLE provision_jobs (
    id              TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES grants (id),
    action          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    done            BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX provision_jobs_due ON provision_jobs (next_attempt_at) WHERE NOT done;
CREATE INDEX provision_jobs_grant ON provision_jobs (grant_id, created_at);

-- Read once by the grant holder, deleted when read and when the grant ends. Never audited.
CREATE TABLE grant_secrets (
    grant_id   TEXT PRIMARY KEY REFERENCES grants (id),
    secret     TEXT NOT NULL
);
