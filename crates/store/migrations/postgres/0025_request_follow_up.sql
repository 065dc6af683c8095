-- Reminders and escalation of a request nobody answers (JSON, from the deciding permit's
-- @remind_after / @escalate_after / @escalate_to); NULL when none. Identical in both dialects.
ALTER TABLE requests ADD COLUMN follow_up TEXT;
