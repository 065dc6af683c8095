-- State kept by integrations across restarts and instances (which chat message shows which
-- request, which signed callbacks were seen). Identical in both dialects.
CREATE TABLE integration_state (
    integration TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    expires_at  BIGINT,
    PRIMARY KEY (integration, key)
);
CREATE INDEX integration_state_expiry ON integration_state (expires_at);
