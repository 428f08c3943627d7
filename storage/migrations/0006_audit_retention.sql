-- 0006: audit trail retention (issue #10): the retention job deletes records older than
-- `retention.audit_max_age`, batch by batch (`Storage.purge_audit`). Without an index on
-- `at`, each run's last batch, which finds nothing left to delete, would read the whole
-- table. The `since`/`until` filters of GET /api/audit use it too.
CREATE INDEX audit_log_at ON audit_log (at);
