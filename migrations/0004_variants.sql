-- Variants (issue 14): resized or converted copies of a stored image, made
-- once on request and kept beside it in the store. A variant lives exactly
-- as long as its image: the statements that delete hosted_images rows
-- delete these rows in the same transaction and queue their objects in
-- deleted_objects. Portable like 0001: every integer is BIGINT.
CREATE TABLE image_variants (
    user_id     TEXT   NOT NULL,
    image_id    TEXT   NOT NULL,
    -- The canonical name of the output (src/variants/params.rs,
    -- Resolved::key), e.g. v1-w256-h171-inside-webp-q80. Equivalent
    -- requests share it; it is unique per image, not across images.
    variant_key TEXT   NOT NULL,
    format      TEXT   NOT NULL,
    size_bytes  BIGINT NOT NULL,
    -- Of the variant's own bytes: its strong ETag, and part of its object
    -- name, so two replicas making the same variant never overwrite each
    -- other's object under a row that describes the other one.
    sha256      TEXT   NOT NULL,
    width       BIGINT NOT NULL,
    height      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, image_id, variant_key)
);
