-- 0018: delivery optimisation (issue #13, point 8): why a delivery was planned as it was.
--
-- * channel_deliveries.decision: the planner's explanation of a row (JSON, not sealed:
--   it holds hours, channel names and read-time medians, no content), e.g.
--   {"time": {"time": "best", "hour": 19, "reads": 42, "lookback_days": 30},
--    "order": {"order": "engagement", "median_read_seconds": {"push": 30}}}.
--   NULL for a row planned without optimisation (every row before this version).
-- * scheduled_notifications.decision: the `time` part, for a scheduled send, kept with
--   the scheduled row so that it is shown even when the send has no channel step.
-- * notifications (user_id, read_at): the engagement read takes a user's most recent
--   reads of the look-back; without it the read walks all of the user's notifications.
--   Partial: unread notifications, most of a busy user's mailbox, are left out.

ALTER TABLE channel_deliveries ADD COLUMN decision TEXT;
-- Why a scheduled send is due when it is ({"time": "best", ...}), shown with it before
-- its release; NULL for an explicit time.
ALTER TABLE scheduled_notifications ADD COLUMN decision TEXT;

CREATE INDEX notifications_read_by_user ON notifications (user_id, read_at)
    WHERE read_at IS NOT NULL;
