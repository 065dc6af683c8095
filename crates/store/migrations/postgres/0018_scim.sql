-- Identical in both dialects (migration 0018).
-- SCIM provisioning: the clients' tokens (their own kind: the API's token table never holds
-- them) and the users each client manages (matched by user name).
CREATE TABLE scim_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE scim_users (
    user_name   TEXT PRIMARY KEY REFERENCES users (name),
    client      TEXT NOT NULL,
    external_id TEXT,
    deleted_at  BIGINT
);

-- Groups a SCIM client created: their membership is the identity provider's.
CREATE TABLE scim_groups (
    group_name  TEXT PRIMARY KEY REFERENCES groups (name),
    client      TEXT NOT NULL,
    external_id TEXT
);
