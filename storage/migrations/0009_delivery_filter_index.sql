-- 0009: the user's history filtered by channel delivery (issue #12, "filters on the
-- user's history by channel and status").
--
-- `GET /api/notifications/user/{userId}?channel=&status=` walks the user's notifications
-- in seq order (UNIQUE (user_id, seq)) and keeps those with a matching delivery: an
-- EXISTS probe per notification into the notification's index of 0007, which is
-- replaced by one that also holds the channel, and on PostgreSQL the status. Every
-- query the narrower index served (a notification's deliveries, their history, ON
-- DELETE CASCADE) still uses its first column.
--
-- Why the two differ. A row's channel never changes; its status changes at every lease
-- and outcome, the delivery hot path. PostgreSQL writes a new entry in every index at
-- each of those updates anyway (each changes `updated_at`, an indexed column, so none is
-- a HOT update): the status costs it nothing, and it needs it, since without it the
-- planner answers a filter on a rare status with a scan of the whole table (every
-- user's deliveries) instead of the walk, whose probes are now index-only. SQLite
-- rewrites only the indexes holding a changed column and always runs the walk: there
-- the status would cost every status change a write, and the probe reads the status
-- from the row instead (one or two rows of that notification).

DROP INDEX channel_deliveries_by_notification;
CREATE INDEX channel_deliveries_by_notification_channel ON channel_deliveries
    (notification_id, channel /*postgresql: , status*/);
