-- Whether the user id an image is filed under came from a trusted source
-- (a response header Studio API set, or a verified token) when its URL was
-- handed out. Only such images count against IMAGE_PER_USER_LIMIT and can
-- be evicted by it: a client that merely claims someone's id must not be
-- able to push that someone's images out. Rows written before this column
-- existed cannot say where their id came from, so they start untrusted:
-- retention and the disk cap still apply to them, the per-user limit does
-- not.
ALTER TABLE hosted_images ADD COLUMN owner_trusted BIGINT NOT NULL DEFAULT 0;

-- Whose a prediction is was learned from whatever id the request carried,
-- a client's claim included. From now on only trusted ids are recorded, so
-- a webhook is attributed only on a trusted word; what was learned before
-- cannot say where it came from. Predictions live an hour: forgetting them
-- costs at most the attribution of webhooks in flight during the upgrade.
DELETE FROM predictions;
