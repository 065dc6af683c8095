-- Host session resources of a role: limits (memory, pids, cpu) as JSON text, '{}' for none;
-- watched paths (files written under them are recorded) as a JSON array.
ALTER TABLE roles ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE roles ADD COLUMN watch_paths TEXT NOT NULL DEFAULT '[]';
