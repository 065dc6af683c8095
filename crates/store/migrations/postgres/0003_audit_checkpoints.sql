-- Signed checkpoints of the audit log: the server's Ed25519 signature over (size, RFC 6962
-- Merkle root of the first `size` events, time). One per size: a second, different root for the
-- same size would be a fork, and is refused.
CREATE TABLE audit_checkpoints (
    size      BIGINT PRIMARY KEY,
    root      BYTEA NOT NULL,
    time      BIGINT NOT NULL,
    key_id    TEXT NOT NULL,
    signature BYTEA NOT NULL
);
