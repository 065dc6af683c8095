-- Data subjects' keys for sealed personal data in the audit log (see pedm_core::privacy),
-- wrapped under the key-encryption key. Erasing a subject deletes their row: what was sealed
-- under the key reads "[erased]" from then on. A legal hold blocks that. Identical in both
-- dialects.
CREATE TABLE privacy_subjects (
    subject     TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL UNIQUE,
    wrapped_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    hold_reason TEXT,
    hold_by     TEXT,
    hold_at     BIGINT
);
