-- Trusted devices: a person's machine, enrolled with a key made there and a client certificate
-- from pedmd's CA, trusted once approved. Identical in both dialects.

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    owner          TEXT NOT NULL REFERENCES users (name),
    name           TEXT NOT NULL,
    posture        TEXT NOT NULL,
    cert_serial    TEXT NOT NULL,
    cert_not_after BIGINT NOT NULL,
    enrolled_at    BIGINT NOT NULL,
    approved_at    BIGINT,
    approved_by    TEXT,
    revoked_at     BIGINT
);
CREATE INDEX devices_owner ON devices (owner, enrolled_at);
