-- A restarted server replays the reports of its active rollouts (received since they started)
-- to rebuild the gates' evidence: find them by channel and time, not by a table scan.
CREATE INDEX reports_by_channel ON reports(channel, received);
