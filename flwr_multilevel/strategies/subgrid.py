"""A view of a Flower Grid restricted to one hub's nodes."""

from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid


class SubGrid(Grid):
    """View of a Grid restricted to one hub's node IDs.

    Stock strategies sample only through ``grid.get_node_ids()``, so handing
    them this view keeps them inside the hub. It lists every node of the hub,
    connected or not: a worker whose node is gone is still sent its message
    and counted missing when its reply does not come (the grid answers for an
    offline node at once), where a stock strategy would wait forever for its
    minimum of connected nodes. Messages go through the wrapped grid unchanged.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = set(node_ids)

    def set_run(self, run_id: Any) -> None:
        """Set the run of the wrapped grid."""
        self._grid.set_run(run_id)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        """Run of the wrapped grid."""
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        """Delegate (deprecated in Flower)."""
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Return the node IDs of this hub (connected or not, see the class)."""
        return sorted(self._ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push messages through the wrapped grid."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull messages through the wrapped grid."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send and receive through the wrapped grid."""
        return self._grid.send_and_receive(messages, timeout=timeout)
