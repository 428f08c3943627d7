"""The node's bus consumer: hands each message to the recipient's mailbox actor."""

from __future__ import annotations

from actors.runtime import ActorSystem
from actors.user_mailbox import Deliver, UserMessage
from pushd.bus import BusMessage
from pushd.ops.metrics import Metrics


class MailboxFeeder:
    """The bus handler of this node.

    A message for a user with no mailbox here has no socket to go to on this node
    (mailboxes exist while sockets are attached), so it is dropped: the notification is
    in storage, and the client gets it when it resumes. Otherwise it is applied to the
    user's mailbox at once; each socket's outbox is bounded (a socket that falls behind
    is closed as a slow consumer and resumes), so nothing queues without bound.
    """

    def __init__(self, mailboxes: ActorSystem[str, UserMessage], metrics: Metrics) -> None:
        self._mailboxes = mailboxes
        self._metrics = metrics

    async def __call__(self, message: BusMessage) -> None:
        if not self._mailboxes.get(message.user_id):
            return
        await self._mailboxes.tell(message.user_id, Deliver(message.seq, message.frame))
        self._metrics.mailbox_handoffs.inc({})
