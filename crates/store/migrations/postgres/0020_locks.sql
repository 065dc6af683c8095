-- Locks: a person or a host stopped from using privilege until expires_at (or lifted).
-- Identical in both dialects.
CREATE TABLE locks (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lifted_at  BIGINT,
    lifted_by  TEXT
);
