-- Validation against every consumer version in the field (issue 14). Agents report the version of
-- each content consumer they run ({"sensor": "7.11"}); a channel names its consumer and the
-- threshold of hosts from which a version must pass the channel's validator command.
ALTER TABLE hosts ADD COLUMN consumers TEXT NOT NULL DEFAULT '{}';  -- JSON object name -> version
ALTER TABLE channels ADD COLUMN consumer TEXT;  -- JSON {"name","min_hosts","versions"}; NULL = none
