-- When a release last changed (unix s): created, then every state change (stable, superseded,
-- quarantined). The release-notes feeds' <updated>: an entry changes when its release is withdrawn.
-- Rows from before this migration: their creation time.
ALTER TABLE releases ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
UPDATE releases SET updated = created;
