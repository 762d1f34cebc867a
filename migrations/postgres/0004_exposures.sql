-- Twin of migrations/0004_exposures.sql: which host each rollout exposed, at which stage, and what
-- became of it there (the gates' evidence a restart rebuilds from).
CREATE TABLE exposures (
  rollout      BIGINT NOT NULL,
  host_id      TEXT NOT NULL,
  stage        BIGINT NOT NULL,                  -- index of the stage that exposed the host
  applied_ms   BIGINT NOT NULL DEFAULT 0,        -- unix ms the host applied the release; 0 = not yet
  healthy      BOOLEAN NOT NULL DEFAULT FALSE,
  failed       BOOLEAN NOT NULL DEFAULT FALSE,
  silent       BOOLEAN NOT NULL DEFAULT FALSE,   -- failed by silence (a suspected crash)
  short_boots  BIGINT NOT NULL DEFAULT 0,        -- short-lived boots since applying
  PRIMARY KEY (rollout, host_id)
);

-- The boot id a host last reported (proto::fnv1a64 of its text, 0 = none).
ALTER TABLE hosts ADD COLUMN boot_hash BIGINT NOT NULL DEFAULT 0;
