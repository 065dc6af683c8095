-- Drift removal: a provisioning job may remove a standing privilege that no grant explains
-- (`action = 'remove_drift'`), so `grant_id` becomes optional and the finding is kept on the
-- job. At most one removal per (target, account, privilege) is pending at a time.
ALTER TABLE provision_jobs ALTER COLUMN grant_id DROP NOT NULL;
ALTER TABLE provision_jobs ADD COLUMN target TEXT;
ALTER TABLE provision_jobs ADD COLUMN account TEXT;
ALTER TABLE provision_jobs ADD COLUMN privilege TEXT;
ALTER TABLE provision_jobs ADD COLUMN source TEXT;
ALTER TABLE provision_jobs ADD CONSTRAINT provision_jobs_subject CHECK (
    CASE WHEN action = 'remove_drift'
         THEN grant_id IS NULL AND target IS NOT NULL AND account IS NOT NULL
              AND privilege IS NOT NULL
         ELSE grant_id IS NOT NULL END);
CREATE UNIQUE INDEX provision_jobs_drift_pending ON provision_jobs (target, account, privilege)
    WHERE action = 'remove_drift' AND NOT done;
