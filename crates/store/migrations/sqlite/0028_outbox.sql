-- The outbox: durable notices (what webhooks, chat and mail deliver), written in the
-- transaction of the change that causes them; integrations read it in `seq` order, each from
-- its own cursor, so a crash after a commit loses no notification.
CREATE TABLE outbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq BIGINT,
    at        BIGINT NOT NULL,
    notice    TEXT NOT NULL
);
CREATE INDEX outbox_at ON outbox (at);
