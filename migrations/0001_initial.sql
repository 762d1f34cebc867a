-- Ringfence schema v1. Applied in one transaction together with PRAGMA user_version = 1.
-- JSON columns hold documents the server validated before writing them.

CREATE TABLE api_tokens (
  name     TEXT PRIMARY KEY,
  role     TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'release', 'admin')),
  hash     TEXT NOT NULL UNIQUE,          -- sha256 hex of the token; the token is never stored
  created  INTEGER NOT NULL
);

CREATE TABLE enrollment_tokens (
  name     TEXT PRIMARY KEY,
  hash     TEXT NOT NULL UNIQUE,
  labels   TEXT NOT NULL DEFAULT '{}',   -- labels every host enrolled with it receives
  expires  INTEGER,                      -- unix seconds, NULL = never
  created  INTEGER NOT NULL
);

CREATE TABLE hosts (
  host_id          TEXT PRIMARY KEY,
  credential_hash  TEXT NOT NULL,
  labels           TEXT NOT NULL DEFAULT '{}',
  tenant           TEXT NOT NULL DEFAULT '',
  pinned           INTEGER NOT NULL DEFAULT 0,
  agent_version    TEXT NOT NULL DEFAULT '',
  enrolled         INTEGER NOT NULL,
  last_seen        INTEGER NOT NULL DEFAULT 0,
  channels         TEXT NOT NULL DEFAULT '{}'   -- {name: {version, state}} as last reported
);

CREATE TABLE rings (
  name         TEXT PRIMARY KEY,
  rank         INTEGER NOT NULL,
  selector     TEXT NOT NULL,
  description  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE channels (
  name            TEXT PRIMARY KEY,
  schema          TEXT NOT NULL DEFAULT '{}',
  validator       TEXT,                   -- {"argv":[..],"timeout_s":N} or NULL
  max_bytes       INTEGER NOT NULL,
  stable_version  INTEGER,
  created         INTEGER NOT NULL
);

CREATE TABLE releases (
  channel     TEXT NOT NULL REFERENCES channels(name),
  version     INTEGER NOT NULL,
  sha256      TEXT NOT NULL,
  size        INTEGER NOT NULL,
  notes       TEXT NOT NULL DEFAULT '',
  state       TEXT NOT NULL,
  manifest    TEXT NOT NULL,
  signature   TEXT NOT NULL,
  validation  TEXT NOT NULL DEFAULT '{}',
  created     INTEGER NOT NULL,
  PRIMARY KEY (channel, version)
);

CREATE TABLE policies (
  name    TEXT PRIMARY KEY,
  stages  TEXT NOT NULL
);

CREATE TABLE rollouts (
  id       INTEGER PRIMARY KEY,
  channel  TEXT NOT NULL,
  version  INTEGER NOT NULL,
  state    TEXT NOT NULL,
  stage    INTEGER NOT NULL,
  body     TEXT NOT NULL,      -- plan and per-stage runtime state
  created  INTEGER NOT NULL,
  updated  INTEGER NOT NULL
);
CREATE INDEX rollouts_by_channel ON rollouts(channel, state);

-- Append-only: the audit trail and the rollout timeline.
CREATE TABLE events (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  time     INTEGER NOT NULL,   -- unix milliseconds
  actor    TEXT NOT NULL,
  kind     TEXT NOT NULL,
  rollout  INTEGER,
  data     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_rollout ON events(rollout, id);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

-- Agent reports, idempotent by (host, boot_id, kind, time).
CREATE TABLE reports (
  host_id  TEXT NOT NULL,
  boot_id  TEXT NOT NULL,
  kind     TEXT NOT NULL,
  time     INTEGER NOT NULL,
  channel  TEXT,
  version  INTEGER,
  detail   TEXT NOT NULL DEFAULT '{}',
  received INTEGER NOT NULL,
  PRIMARY KEY (host_id, boot_id, kind, time)
);

CREATE TABLE settings (
  key    TEXT PRIMARY KEY,
  value  TEXT NOT NULL
);
