-- The blast-radius budget survives a restart (issue 14): hosts newly exposed per minute, over every
-- rollout ('' = the global budget) and per tenant ('tenant:NAME'). A restarted server reads the
-- last hour back, so a restart does not hand out a fresh hour's budget. Written in the group commit
-- that persists the exposures it counts; rows older than an hour are deleted as new ones come.
CREATE TABLE budget_usage (
  scope   TEXT NOT NULL,
  minute  INTEGER NOT NULL,      -- unix time / 60
  hosts   INTEGER NOT NULL,
  PRIMARY KEY (scope, minute)
) WITHOUT ROWID;
