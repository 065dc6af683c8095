-- Agents authenticate with client certificates from pedmd's CA: the registration token
-- becomes a one-time enrollment token (until enroll_expires_at, spent at enrolled_at), the
-- newest certificate's serial and end are kept, and a revoked host is refused. Identical in
-- both dialects.

ALTER TABLE hosts ADD COLUMN enroll_expires_at BIGINT;
ALTER TABLE hosts ADD COLUMN enrolled_at BIGINT;
ALTER TABLE hosts ADD COLUMN revoked_at BIGINT;
ALTER TABLE hosts ADD COLUMN cert_serial TEXT;
ALTER TABLE hosts ADD COLUMN cert_not_after BIGINT;
