-- Twin of migrations/0003_enrollment_trust.sql: enrollment tokens with a use limit, a tenant, a
-- rate and revocation; each host's track record and the token that enrolled it.

ALTER TABLE enrollment_tokens ADD COLUMN max_uses BIGINT;                    -- NULL = unlimited
ALTER TABLE enrollment_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;     -- hosts enrolled
ALTER TABLE enrollment_tokens ADD COLUMN tenant TEXT NOT NULL DEFAULT '';    -- '' = none
ALTER TABLE enrollment_tokens ADD COLUMN rate_per_min BIGINT NOT NULL DEFAULT 0;  -- 0 = default
ALTER TABLE enrollment_tokens ADD COLUMN revoked BIGINT;                     -- unix s, NULL = active

-- since_ms: the first agent request after the host was (re-)enrolled or reset (0 = none yet).
-- enroll_token: the token (or 'reset:<actor>') that enrolled the current credential holder.
CREATE TABLE host_trust (
  host_id       TEXT PRIMARY KEY,
  since_ms      BIGINT NOT NULL DEFAULT 0,
  enroll_token  TEXT NOT NULL DEFAULT ''
);
INSERT INTO host_trust(host_id, since_ms, enroll_token)
  SELECT host_id, CASE WHEN last_seen > enrolled THEN enrolled * 1000 ELSE 0 END, '' FROM hosts;
