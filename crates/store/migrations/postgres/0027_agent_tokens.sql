-- Agent tokens: a token a person mints for an AI agent acting for them (`pedm token create
-- --for-agent`). Whoever presents it may only do what the agent allow-list lets; every other
-- token is FALSE. Identical in both dialects.

ALTER TABLE tokens ADD COLUMN agent BOOLEAN NOT NULL DEFAULT FALSE;
