"""An in-process Flower Grid: runs a real ClientApp without Ray.

It gives every virtual node the ``node_config`` of Flower's simulation engine
(``partition-id``, ``num-partitions``) and a ``Context`` whose state persists
across rounds. Replies are computed when messages are pushed; a ClientApp
exception becomes an error reply, as in the simulation engine.

Deadlines: ``send_and_receive(messages, timeout=T)`` runs the messages one
after the other until T seconds have passed; the rest are not run (no reply,
as for a message the engine dropped). A message past its own ``ttl`` is not
run either. Python cannot pre-empt the ClientApp in-process, so the message
that is running when the deadline passes runs to its end; its reply is then
discarded as timed out.
"""

import time
from collections.abc import Callable, Iterable
from logging import DEBUG
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_multilevel import flower_compat
from flwr_multilevel.engines.dispatch import expired
from flwr_multilevel.flower_compat import ErrorCode
from flwr_multilevel.protocol.keys import NUM_PARTITIONS, PARTITION_ID

FIRST_NODE_ID = 1000


class LocalGrid(Grid):
    """A Grid whose nodes run ``client_app`` in this process, one after the other.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        Number of virtual nodes; node ``FIRST_NODE_ID + i`` has partition-id i.
    run_config : dict | None (default: None)
        ``context.run_config`` of every node.
    clock : Callable[[], float] (default: time.monotonic)
        The clock of ``send_and_receive``'s deadline (seconds).

    Examples
    --------
    >>> from flwr_multilevel.client_app import app
    >>> grid = LocalGrid(app, 2)
    >>> sorted(grid.get_node_ids())
    [1000, 1001]
    """

    nodes_fixed = True  # every node is there from the start (strategies.discovery)

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = client_app
        self._clock = clock
        self._deadline: float | None = None  # of the send_and_receive under way
        self._replies: dict[str, Message] = {}
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config={PARTITION_ID: i, NUM_PARTITIONS: num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        # Message() reads the run and sender from the task identity (set by Flower's runtime)
        flower_compat.act_as_superlink(run_id=1, task_id=1)

    def set_run(self, run_id: Any) -> None:
        """No runs to switch between."""

    @property
    def run(self):  # type: ignore[no-untyped-def]
        """Not available in-process."""
        raise NotImplementedError("LocalGrid has no Run")

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def] # noqa: D102,E501
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Return every virtual node ID."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run the ClientApp on each message now; return every message ID.

        A message is not run once its ttl (or, within :meth:`send_and_receive`,
        the round's deadline) has passed, and a reply that completes after
        either is discarded: it has no reply.
        """
        deadline = self._deadline
        ids = []
        for message in messages:
            message_id = uuid4().hex
            flower_compat.set_message_id(message, message_id)
            ids.append(message_id)
            if self._late(message, deadline):
                log(DEBUG, "node %s: past the deadline, not run", message.metadata.dst_node_id)
                continue
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self._app(message, context)
            except Exception as err:  # pylint: disable=broad-except
                reason = f"{type(err).__name__}: {err}"
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message
                )
            if self._late(message, deadline):
                log(DEBUG, "node %s: replied after the deadline", message.metadata.dst_node_id)
                continue
            self._replies[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies to ``message_ids``."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run ``messages`` until ``timeout`` seconds have passed; return the replies in time.

        Messages not run by then, and a reply completed after it, have no reply.
        """
        self._deadline = None if timeout is None else self._clock() + timeout
        try:
            return self.pull_messages(self.push_messages(messages))
        finally:
            self._deadline = None

    def _late(self, message: Message, deadline: float | None) -> bool:
        """Return whether ``deadline`` (on the grid's clock) or ``message``'s ttl has passed."""
        return expired(message) or (deadline is not None and self._clock() >= deadline)
