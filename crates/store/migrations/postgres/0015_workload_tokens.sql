-- Workload identities: a token exchanged for a CI job's or service's platform token (RFC 8693)
-- keeps what that platform asserted (JSON: trust, issuer, subject, repository, ...); NULL for
-- every other token. Identical in both dialects.

ALTER TABLE tokens ADD COLUMN workload TEXT;
