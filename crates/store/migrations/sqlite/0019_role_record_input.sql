-- Host sessions of a role may record what the user types (never with echo off); off by
-- default: output only.
ALTER TABLE roles ADD COLUMN record_input BOOLEAN NOT NULL DEFAULT FALSE;
