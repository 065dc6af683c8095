-- Host session controls of a role: noexec (no program may start another) and allow_setuid
-- (without it sessions run with no_new_privs).
ALTER TABLE roles ADD COLUMN noexec BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE roles ADD COLUMN allow_setuid BOOLEAN NOT NULL DEFAULT FALSE;
