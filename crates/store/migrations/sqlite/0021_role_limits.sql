-- Resource limits of a role's host sessions (memory, pids, cpu), as JSON text; '{}': none.
ALTER TABLE roles ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
