-- Twin of migrations/0006_consumer_versions.sql: each host's content consumer versions, and the
-- consumer a channel validates against.
ALTER TABLE hosts ADD COLUMN consumers TEXT NOT NULL DEFAULT '{}';  -- JSON object name -> version
ALTER TABLE channels ADD COLUMN consumer TEXT;  -- JSON {"name","min_hosts","versions"}; NULL = none
