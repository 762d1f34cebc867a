-- Twin of migrations/0007_release_updated.sql: when a release last changed (unix s), for the
-- release-notes feeds; rows from before: their creation time.
ALTER TABLE releases ADD COLUMN updated BIGINT NOT NULL DEFAULT 0;
UPDATE releases SET updated = created;
