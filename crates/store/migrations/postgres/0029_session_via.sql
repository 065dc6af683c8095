-- Where a session recording came from when not from pedm-agent (`sudo_log`: a host's stock
-- sudo sent its I/O log to pedmd's log server). NULL for agent sessions.
ALTER TABLE sessions ADD COLUMN via TEXT;
