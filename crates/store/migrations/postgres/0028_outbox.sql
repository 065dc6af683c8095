-- The outbox: durable notices (what webhooks, chat and mail deliver), written in the
-- transaction of the change that causes them; integrations read it in `seq` order, each from
-- its own cursor, so a crash after a commit loses no notification.
-- `seq` is drawn while the changeset holds the audit chain's head row, so it increases in
-- commit order: a reader never sees a later entry before an earlier one commits.
CREATE TABLE outbox (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_seq BIGINT,
    at        BIGINT NOT NULL,
    notice    TEXT NOT NULL
);
CREATE INDEX outbox_at ON outbox (at);
