-- Host session controls of a role: record_input (what the user types is recorded too, never
-- with echo off; off: output only) and intercept (every exec in a session is decided by
-- policy and recorded as session.exec).
ALTER TABLE roles ADD COLUMN record_input BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE roles ADD COLUMN intercept BOOLEAN NOT NULL DEFAULT FALSE;
