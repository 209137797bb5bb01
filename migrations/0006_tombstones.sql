-- Issue 20. Portable like 0001: every integer is BIGINT.
--
-- Tombstones (finding 17): a deleted image answers 410 image_gone with why
-- it went, for IMAGE_TOMBSTONE_DAYS, then 404 like one that never existed.
-- Written in the same transaction that deletes the hosted_images row (one
-- function records a deletion: repo::deletes::record_deletion). Bounded
-- and swept like failed downloads: older than the window, or beyond
-- IMAGE_TOMBSTONE_MAX newest, they are forgotten by the cleanup job.
CREATE TABLE image_tombstones (
    user_id    TEXT   NOT NULL,
    image_id   TEXT   NOT NULL,
    -- expired | user_limit | storage_cap | deleted
    reason     TEXT   NOT NULL,
    deleted_at BIGINT NOT NULL,
    -- A private image's tombstone answers an unsigned request with 404,
    -- as a private image itself does (finding 5: no existence oracle).
    private    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, image_id)
);
-- The sweep forgets the oldest first.
CREATE INDEX image_tombstones_deleted ON image_tombstones (deleted_at);

-- Variant lock-out (finding 4): when an image has IMAGE_VARIANTS_PER_IMAGE
-- variants, the least recently requested one makes room for a new one, so
-- each variant remembers its last request (written in batches, like the
-- image's). Existing rows start at their creation time.
ALTER TABLE image_variants ADD COLUMN requested_at BIGINT NOT NULL DEFAULT 0;
UPDATE image_variants SET requested_at = created_at;
