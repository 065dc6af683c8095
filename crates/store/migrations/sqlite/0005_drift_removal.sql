-- Drift removal: a provisioning job may remove a standing privilege that no grant explains
-- (`action = 'remove_drift'`), so `grant_id` becomes optional and the finding is kept on the
-- job. At most one removal per (target, account, privilege) is pending at a time.
-- SQLite cannot drop NOT NULL in place: the table is rebuilt (nothing references it).
CREATE TABLE provision_jobs_new (
    id              TEXT PRIMARY KEY,
    grant_id        TEXT REFERENCES grants (id),
    action          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    done            BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL,
    target          TEXT,
    account         TEXT,
    privilege       TEXT,
    source          TEXT,
    CHECK (CASE WHEN action = 'remove_drift'
                THEN grant_id IS NULL AND target IS NOT NULL AND account IS NOT NULL
                     AND privilege IS NOT NULL
                ELSE grant_id IS NOT NULL END)
);
INSERT INTO provision_jobs_new (id, grant_id, action, attempts, next_attempt_at, last_error,
                                done, created_at)
    SELECT id, grant_id, action, attempts, next_attempt_at, last_error, done, created_at
    FROM provision_jobs;
DROP TABLE provision_jobs;
ALTER TABLE provision_jobs_new RENAME TO provision_jobs;
CREATE INDEX provision_jobs_due ON provision_jobs (next_attempt_at) WHERE NOT done;
CREATE INDEX provision_jobs_grant ON provision_jobs (grant_id, created_at);
CREATE UNIQUE INDEX provision_jobs_drift_pending ON provision_jobs (target, account, privilege)
    WHERE action = 'remove_drift' AND NOT done;
