-- External (vendor, contractor) accounts: a user with a sponsor and an expiry, kept beside
-- the user row so plain users are unchanged. `notified_at` and `expired_at` make the
-- scheduler's sponsor notice and expiry happen once per expiry (cleared by an extension).
-- Identical in both dialects.

CREATE TABLE external_accounts (
    user_name   TEXT PRIMARY KEY REFERENCES users (name),
    sponsor     TEXT NOT NULL REFERENCES users (name),
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    notified_at BIGINT,
    expired_at  BIGINT
);
CREATE INDEX external_accounts_expires ON external_accounts (expires_at);
