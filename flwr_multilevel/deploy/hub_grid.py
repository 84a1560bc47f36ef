"""A deployed hub's view of its SuperLink: quick pulls, signs of life, and a watch for its loss.

:class:`FastGrid` wraps the Grid Flower hands the hub's ServerApp: it pulls
replies every ``poll_s`` seconds instead of Flower's 3 s, calls ``on_progress``
after every call that returned (the hub's round loop is alive: its peer layer
tells the neighbours so, :meth:`NetworkPeerLayer.beat`), and keeps when the call
in flight began. Flower's grid retries a lost SuperLink forever, so a hub whose
SuperLink died would hang in that call while its peer layer kept answering;
:class:`SuperLinkWatch` sees a call in flight for longer than
``deploy.superlink_timeout`` and ends the hub: its neighbours are told it left
the run, a one-line reason is written where ``flwr-multilevel deploy`` reads it,
and the process exits with status 1.
"""

import os
import threading
import time
from collections.abc import Callable, Iterable
from logging import ERROR
from pathlib import Path
from typing import Any

from flwr.app import Message, RecordDict
from flwr.common.logger import FLOWER_LOGGER, log
from flwr.serverapp import Grid

from flwr_multilevel.flower_compat import Run

POLL_S = 0.05
FAILED_FILE = "failed"  # one line: why the hub stopped (read by deploy's HubWatch)


class FastGrid(Grid):
    """A Grid whose ``send_and_receive`` pulls replies every ``poll_s`` seconds.

    Flower's ``HttpGrid.send_and_receive`` sleeps 3 s between two pulls, so
    every round of a deployed hub would last at least 3 s; this wrapper pushes,
    then pulls with a short pause. Everything else is the wrapped grid's.

    Parameters
    ----------
    grid : Grid
        The grid Flower hands the ServerApp.
    poll_s : float (default: 0.05)
        Seconds between two pulls.
    on_progress : Callable[[], None] | None (default: None)
        Called after every call to the wrapped grid that returned.
    """

    def __init__(
        self, grid: Grid, poll_s: float = POLL_S, on_progress: Callable[[], None] | None = None
    ) -> None:
        self.grid, self.poll_s = grid, float(poll_s)
        self.on_progress = on_progress
        self.busy_since: float | None = None  # when the call in flight began (monotonic)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)  # anything else Flower's grid offers

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        self.busy_since = time.monotonic()
        try:
            result = method(*args)
        finally:
            self.busy_since = None
        if self.on_progress is not None:
            self.on_progress()
        return result

    def set_run(self, run: Run) -> None:  # noqa: D102 (the wrapped grid's)
        self.grid.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102
        return self.grid.run

    def create_message(  # noqa: D102  # pylint: disable=too-many-arguments
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self._call(self.grid.get_node_ids))

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return list(self._call(self.grid.push_messages, messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return list(self._call(self.grid.pull_messages, message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull replies every ``poll_s`` until all came or ``timeout``.

        A message the SuperLink did not take (no id) gets no reply here; the
        caller counts it like any other worker without a reply.
        """
        pending = {m for m in self.push_messages(messages) if m}
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (timeout is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll_s)
        return replies


class SuperLinkWatch:
    """Ends the hub when a call to its SuperLink has hung for ``limit`` seconds.

    Parameters
    ----------
    grid : FastGrid
        The hub's grid (its ``busy_since`` is watched).
    limit : float
        ``deploy.superlink_timeout``.
    on_lost : Callable[[str], None]
        Called once, from the watch's thread, with the one-line reason; it
        should tell the neighbours and end the process (:func:`leave_run`).
    every : float (default: 0.5)
        Seconds between two looks.
    """

    def __init__(
        self, grid: FastGrid, limit: float, on_lost: Callable[[str], None], every: float = 0.5
    ) -> None:
        self.grid, self.limit, self.on_lost, self.every = grid, float(limit), on_lost, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="superlink-watch", daemon=True)

    def start(self) -> "SuperLinkWatch":
        """Start watching; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the hub finished)."""
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            since = self.grid.busy_since
            if since is not None and time.monotonic() - since >= self.limit:
                self.on_lost(
                    f"its SuperLink did not answer for {self.limit:g} s "
                    "(deploy.superlink_timeout): it is gone"
                )
                return


def leave_run(folder: Path, reason: str, leave: Callable[[str], None], exit_code: int = 1) -> None:
    """Record why the hub stops, tell its neighbours (``leave``), then end the process.

    ``folder/failed`` gets the reason (one line); ``leave`` returns once the
    neighbours were told (or its own bound passed); then the process exits at
    once with ``exit_code`` (Flower's own shutdown would wait on the lost SuperLink).
    """
    line = " ".join(reason.split())
    log(ERROR, "hub stops: %s", line)
    try:
        (folder / FAILED_FILE).write_text(line + "\n")
    except OSError:
        pass
    leave(line)
    for handler in FLOWER_LOGGER.handlers:
        handler.flush()
    os._exit(exit_code)  # pylint: disable=protected-access
