"""An in-process Flower Grid: runs a real ClientApp without Ray.

It gives every virtual node the ``node_config`` of Flower's simulation engine
(``partition-id``, ``num-partitions``) and a ``Context`` whose state persists
across rounds. Replies are computed when messages are pushed; a ClientApp
exception becomes an error reply, as in the simulation engine.
"""

from collections.abc import Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

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
    """

    def __init__(
        self, client_app: ClientApp, num_nodes: int, run_config: dict | None = None
    ) -> None:
        self._app = client_app
        self._replies: dict[str, Message] = {}
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=1,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for i in range(num_nodes)
        }
        # Message() reads the run and sender from the task identity (set by Flower's runtime)
        TaskIdentity.run_id, TaskIdentity.task_id = 1, 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID

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
        """Run the ClientApp on each message now; return message IDs."""
        ids = []
        for message in messages:
            message_id = uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self._app(message, context)
            except Exception as err:  # pylint: disable=broad-except
                reason = f"{type(err).__name__}: {err}"
                reply = Message(
                    Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message
                )
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies to ``message_ids``."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and return every reply."""
        return self.pull_messages(self.push_messages(messages))
