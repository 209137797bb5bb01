-- Requests per image per hour (issue 17: the admin page's "most requested
-- images of the last 24 hours"). Written in the same transaction as the
-- batched request times (hosted_images.views), never per request, and pruned
-- by cleanup once older than 48 hours. `hour` is the Unix millisecond at the
-- start of the hour. Portable like 0001: the same file runs on SQLite and
-- Postgres, every integer BIGINT.
CREATE TABLE image_views_hourly (
    user_id  TEXT   NOT NULL,
    image_id TEXT   NOT NULL,
    hour     BIGINT NOT NULL,
    views    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, image_id, hour)
);

-- The top-images query and the prune both select by hour.
CREATE INDEX image_views_hourly_hour ON image_views_hourly (hour);
