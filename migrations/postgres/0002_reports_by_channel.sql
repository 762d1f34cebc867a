-- Twin of migrations/0002_reports_by_channel.sql. A restarted server replays the reports of its
-- active rollouts (received since they started): find them by channel and time, not a table scan.
CREATE INDEX reports_by_channel ON reports(channel, received);
