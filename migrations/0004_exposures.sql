-- Acknowledged = durable, for evidence (wave 2). A restarted server rebuilds its gates from what
-- was acknowledged: which host each rollout exposed, at which stage, and what became of it there.
-- Written in the same group commit as the report or heartbeat that changed it.
CREATE TABLE exposures (
  rollout      INTEGER NOT NULL,
  host_id      TEXT NOT NULL,
  stage        INTEGER NOT NULL,        -- index of the stage that exposed the host
  applied_ms   INTEGER NOT NULL DEFAULT 0,   -- unix ms the host applied the release; 0 = not yet
  healthy      INTEGER NOT NULL DEFAULT 0,
  failed       INTEGER NOT NULL DEFAULT 0,
  silent       INTEGER NOT NULL DEFAULT 0,   -- failed by silence (a suspected crash)
  short_boots  INTEGER NOT NULL DEFAULT 0,   -- short-lived boots since applying (boot loop signal)
  PRIMARY KEY (rollout, host_id)
) WITHOUT ROWID;

-- The boot id a host last reported (proto::fnv1a64 of its text, 0 = none): a new boot id seen after
-- a restart of the server is still a reboot (the boot-loop signal).
ALTER TABLE hosts ADD COLUMN boot_hash INTEGER NOT NULL DEFAULT 0;
