-- Single sign-on (OIDC): identities linked to users, group memberships that came from an
-- identity provider (the memberships themselves are ordinary group_members rows), SSO sessions
-- (a pedm token plus the provider's refresh token, which never leaves the server) and login
-- flows in progress (single use). Identical in both dialects.

CREATE TABLE sso_identities (
    issuer    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    user_name TEXT NOT NULL REFERENCES users (name),
    PRIMARY KEY (issuer, subject)
);

CREATE TABLE sso_group_members (
    user_name  TEXT NOT NULL REFERENCES users (name),
    group_name TEXT NOT NULL REFERENCES groups (name),
    PRIMARY KEY (user_name, group_name)
);

CREATE TABLE sso_sessions (
    token_id      TEXT PRIMARY KEY REFERENCES tokens (id),
    provider      TEXT NOT NULL,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    refresh_token TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE sso_flows (
    id           TEXT PRIMARY KEY,
    provider     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    nonce        TEXT,
    redirect_uri TEXT,
    device_code  TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
