-- The cleanup walk reads stored rows by last request, newest first, one
-- page at a time (repo::queries::stored_page_sql), at every start and every
-- IMAGE_CLEANUP_INTERVAL_SECS. With only (requested_at) indexed, SQLite,
-- which keeps no statistics here, answered `state = 'stored'` from
-- hosted_images_pending and sorted every stored row for every page, and
-- Postgres scanned down from the newest row to the cursor: the walk was
-- quadratic in the table. (state, requested_at) gives both databases a
-- range from the cursor down, and replaces the index that only this walk
-- used.
DROP INDEX hosted_images_requested;
CREATE INDEX hosted_images_state_requested ON hosted_images (state, requested_at);

-- With (state, requested_at) there, SQLite took it for the per-user limit
-- too (`user_id = ? AND state = 'stored' ORDER BY requested_at DESC`, run
-- for every image stored), which then walked every stored row: the user's
-- own index needs state as well to stay the better match.
DROP INDEX hosted_images_user_requested;
CREATE INDEX hosted_images_user_state_requested ON hosted_images (user_id, state, requested_at);
