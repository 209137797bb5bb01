-- The plan's hosted_images table: one row per hosted URL handed out, from
-- the moment it leaves the proxy (pending) until the image is deleted.
-- Portable on purpose: the same file runs on SQLite and Postgres. Times are
-- Unix milliseconds; every integer is BIGINT so both read back as i64.
CREATE TABLE hosted_images (
    user_id       TEXT   NOT NULL,
    image_id      TEXT   NOT NULL,
    -- pending: the URL is out, the bytes are not stored yet;
    -- stored: servable; failed: the source failed for good.
    state         TEXT   NOT NULL,
    -- The stored format's extension; a guess from the URL while pending.
    format        TEXT   NOT NULL,
    size_bytes    BIGINT NOT NULL DEFAULT 0,
    sha256        TEXT   NOT NULL DEFAULT '',
    width         BIGINT,
    height        BIGINT,
    -- NULL for data: URIs, which are stored before their URL leaves.
    source_url    TEXT,
    prediction_id TEXT,
    created_at    BIGINT NOT NULL,
    stored_at     BIGINT,
    -- Last handed out or served; retention and the per-user limit use it.
    requested_at  BIGINT NOT NULL,
    views         BIGINT NOT NULL DEFAULT 0,
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    failed_at     BIGINT,
    -- A pending row may be downloaded by any replica once due_at has
    -- passed and its lease (lease_owner until lease_until) has run out.
    due_at        BIGINT NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   BIGINT NOT NULL DEFAULT 0,
    private       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, image_id)
);

-- Takeover of abandoned downloads: pending rows by due time.
CREATE INDEX hosted_images_pending ON hosted_images (state, due_at);
-- The per-user limit and a user's listing.
CREATE INDEX hosted_images_user_requested ON hosted_images (user_id, requested_at);
-- Retention, the disk cap and the cleanup plan walk by last request.
CREATE INDEX hosted_images_requested ON hosted_images (requested_at);

-- Objects whose rows are gone but whose bytes may still be in the store:
-- written in the same transaction as the row delete, removed once the
-- bytes are, so a crash in between leaks nothing.
CREATE TABLE deleted_objects (
    path      TEXT   NOT NULL PRIMARY KEY,
    queued_at BIGINT NOT NULL
);

-- Small facts about the database itself, such as when the store written by
-- an earlier version was imported.
CREATE TABLE permaproxy_meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
