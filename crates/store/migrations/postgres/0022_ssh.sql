-- SSH certificates: a role's SSH settings (JSON text, '{}' for none) and every certificate
-- pedmd's SSH CAs issued (serial as decimal text: it uses all 64 bits). Identical in both
-- dialects.
ALTER TABLE roles ADD COLUMN ssh TEXT NOT NULL DEFAULT '{}';

CREATE TABLE ssh_certificates (
    serial          TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    grant_id        TEXT,
    key_id          TEXT NOT NULL,
    principals      TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    ca_fingerprint  TEXT NOT NULL,
    valid_after     BIGINT NOT NULL,
    valid_before    BIGINT NOT NULL,
    issued_by       TEXT NOT NULL,
    issued_at       BIGINT NOT NULL
);
-- The KRL lists user certificates still valid whose grant has ended.
CREATE INDEX ssh_certificates_valid ON ssh_certificates (valid_before);
CREATE INDEX ssh_certificates_grant ON ssh_certificates (grant_id);
