-- Twin of migrations/0005_budget_usage.sql: hosts newly exposed per minute, over every rollout
-- ('' = the global budget) and per tenant ('tenant:NAME'), so a restart hands out no fresh hour.
CREATE TABLE budget_usage (
  scope   TEXT NOT NULL,
  minute  BIGINT NOT NULL,      -- unix time / 60
  hosts   BIGINT NOT NULL,
  PRIMARY KEY (scope, minute)
);
