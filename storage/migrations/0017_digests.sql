-- 0017: digests (issue #13, point 6): a category with a digest window gathers a user's
-- notifications on its digest channels (email by default) into one message.
--
-- A digest row is a channel delivery like any other, status scheduled (then queued,
-- sending, sent...) and reason 'digest', due when the window opened by its
-- notification closes. Its digest is (user_id, channel, the notification's category):
-- when the oldest unsent row of that triple is due, ONE lease takes every unsent row
-- of it (storage/sql/digests.py) and one message lists them all. A row committed after
-- that lease is still unsent, so it opens the next window: each row is in exactly one
-- digest. No new column: the status machine, the cancellation on read (reading a
-- notification cancels its row like any `unless_read` step) and the history are the
-- channel deliveries' own.
--
-- Both indexes hold only unsent digest rows, so they stay as small as the digests
-- waiting to go out: finding the due digests of a channel (every lease round, so it
-- must not scan the channel's ordinary backlog), and gathering a user's rows of one.

CREATE INDEX channel_deliveries_digest_due ON channel_deliveries (channel, due_at)
    WHERE status IN ('scheduled', 'queued') AND reason = 'digest';
CREATE INDEX channel_deliveries_digest_pending ON channel_deliveries (user_id, channel)
    WHERE status IN ('scheduled', 'queued') AND reason = 'digest';
