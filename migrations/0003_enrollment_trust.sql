-- Enrollment trust (wave 2): enrollment tokens with a use limit, a tenant, a rate and revocation;
-- each host's track record (since when it has been in contact) and the token that enrolled it.

ALTER TABLE enrollment_tokens ADD COLUMN max_uses INTEGER;            -- NULL = unlimited
ALTER TABLE enrollment_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;  -- hosts enrolled
ALTER TABLE enrollment_tokens ADD COLUMN tenant TEXT NOT NULL DEFAULT '';  -- '' = none
ALTER TABLE enrollment_tokens ADD COLUMN rate_per_min INTEGER NOT NULL DEFAULT 0;  -- 0 = server default
ALTER TABLE enrollment_tokens ADD COLUMN revoked INTEGER;             -- unix s, NULL = active

-- One row per host. since_ms: the first agent request after the host was (re-)enrolled or reset
-- (0 = none yet); a host's evidence counts for a rollout only when since_ms is at least
-- --evidence-min-age-s before the rollout started. enroll_token: the token (or 'reset:<actor>')
-- that enrolled the current credential holder.
CREATE TABLE host_trust (
  host_id       TEXT PRIMARY KEY,
  since_ms      INTEGER NOT NULL DEFAULT 0,
  enroll_token  TEXT NOT NULL DEFAULT ''
);
-- Hosts enrolled before this migration that have spoken since keep their record from enrollment.
INSERT INTO host_trust(host_id, since_ms, enroll_token)
  SELECT host_id, CASE WHEN last_seen > enrolled THEN enrolled * 1000 ELSE 0 END, '' FROM hosts;
