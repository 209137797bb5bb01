-- CDN purges owed. A row is written in the same transaction as the delete
-- (or the flip to private) that owes it, so a crash or a provider outage
-- never loses one; it is removed once the provider has taken it. Any
-- replica may send a due row whose lease has run out, as with downloads.
CREATE TABLE cdn_purges (
    tag         TEXT   NOT NULL PRIMARY KEY,
    -- The hosted path of an image's tag, for the webhook provider; NULL
    -- for a user's tag.
    path        TEXT,
    queued_at   BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX cdn_purges_due ON cdn_purges (due_at);
