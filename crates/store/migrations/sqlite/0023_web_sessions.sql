-- Console (browser) sessions: each backed by a token minted at sign-in (its expiry is the
-- absolute timeout); last_seen_at drives the idle timeout. Identical in both dialects.
CREATE TABLE web_sessions (
    token_id     TEXT PRIMARY KEY REFERENCES tokens (id),
    user_name    TEXT NOT NULL,
    method       TEXT NOT NULL,
    provider     TEXT,
    source       TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX web_sessions_user ON web_sessions (user_name);
