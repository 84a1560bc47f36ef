"""How the simulation engine hands messages to its workers, so timed-out work cannot pile up.

Flower's engine (``flwr.server.superlink.fleet.vce.vce_api``) moves every
message from its LinkState into one in-memory queue as soon as it is stored,
and its worker threads run whatever they take from that queue, expired or
not. A message whose round has timed out therefore still runs later, and
delays the next rounds' messages queued behind it; a reply that completes
after its deadline is refused by the LinkState with an error in the log.

:class:`Dispatch` changes three things, the way a real SuperNode behaves:

* one message in flight per node: a node's next message stays in the
  LinkState while its previous one runs, so it expires there (the
  LinkState drops messages past their ``ttl``) instead of running late;
* a message that expired while waiting for a free worker is not run;
* a reply that completes after its message's deadline is dropped quietly.

It also hands messages out faster: the feeder takes the messages the grid
stores as they come (an inbox per node) instead of asking the LinkState node
after node, which scans every stored message each time (O(N^2) per pass over
N nodes: 60% of the driver's CPU at 1,000 workers), and it runs as soon as a
message is stored instead of every 0.1 s. :meth:`Dispatch.settle` lets a
worker wait until a round's messages are all queued before it takes a group
(:mod:`~flwr_multilevel.engines.ray_groups`).

Messages must carry the round's deadline as their ``ttl`` (MLL-SGD sets it
to the round's timeout). Work already running cannot be stopped: Ray has no
way to pre-empt an actor's Python code, so a worker that overruns holds its
actor until it returns.
"""

import threading
import time
from collections import deque
from logging import DEBUG
from queue import Empty, Queue
from typing import Any

from flwr.app import Message
from flwr.common import now
from flwr.common.logger import log

from flwr_multilevel import flower_compat


def expired(message: Message, at: float | None = None) -> bool:
    """Return whether ``message`` is past its deadline (``created_at + ttl``).

    A reply carries the deadline of the message it answers (Flower limits its ttl).

    Examples
    --------
    >>> from flwr.app import RecordDict
    >>> from flwr_multilevel.client_app import app
    >>> from flwr_multilevel.engines.local_grid import LocalGrid
    >>> msg = LocalGrid(app, 1).create_message(RecordDict(), "train", 1000, "", ttl=5)
    >>> expired(msg), expired(msg, at=msg.metadata.created_at + 5)
    (False, True)
    """
    current = now().timestamp() if at is None else at
    return bool(message.metadata.created_at + message.metadata.ttl <= current)


class Dispatch:
    """One engine run's messages in flight, by node.

    Examples
    --------
    >>> dispatch = Dispatch()
    >>> dispatch.start(7), dispatch.start(7)
    (True, False)
    >>> dispatch.finish(7); dispatch.start(7)
    True
    """

    def __init__(self) -> None:
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._passes = threading.Condition()
        self._feeding = False  # a pass over the nodes is running
        self._arrived = threading.Event()  # the grid stored a message since the pass began
        self._last_arrival = 0.0  # time.monotonic() of the grid's latest message

    def start(self, node_id: int) -> bool:
        """Mark ``node_id`` busy; return False if it already was."""
        with self._lock:
            if node_id in self._busy:
                return False
            self._busy.add(node_id)
            return True

    def busy(self, node_id: int) -> bool:
        """Return whether a message of ``node_id`` is queued or running."""
        with self._lock:
            return node_id in self._busy

    def finish(self, node_id: int) -> None:
        """Mark ``node_id`` free for its next message."""
        with self._lock:
            self._busy.discard(node_id)

    def feeder(self, interval: float) -> Any:
        """Return the engine's ``add_messages_to_queue``: one message in flight per node.

        It takes the messages the grid stores as they come (an inbox per
        node), not by asking the LinkState node after node (Flower's
        ``get_message_ins`` scans every stored message, O(N^2) per pass over N
        nodes), and marks them delivered as ``get_message_ins`` does. A pass
        runs when a message arrives, or every ``interval`` seconds (Flower's
        waits 0.1 s). A LinkState without ``store_message_ins`` is polled
        with ``get_message_ins`` instead (:func:`~flwr_multilevel.flower_compat.tap_stored_messages`
        logs one warning).
        """

        def feed(
            state: Any, queue: Queue[Message], nodes_mapping: Any, f_stop: threading.Event
        ) -> None:
            inbox: dict[int, deque[Message]] = {node_id: deque() for node_id in nodes_mapping}
            ready: set[int] = set()  # nodes whose inbox may hold messages

            def stored(message: Message, message_id: str | None) -> None:
                if message_id is not None and message.metadata.dst_node_id in inbox:
                    inbox[message.metadata.dst_node_id].append(message)
                    ready.add(message.metadata.dst_node_id)  # after the append: never missed
                self._last_arrival = time.monotonic()
                self._arrived.set()

            with flower_compat.tap_stored_messages(state, stored) as tapped:
                self._feed(state, queue, (inbox, ready), f_stop, interval, polled=not tapped)

        return feed

    # pylint: disable-next=too-many-arguments,too-many-positional-arguments
    def _feed(
        self,
        state: Any,
        queue: Queue[Message],
        inboxes: tuple[dict[int, "deque[Message]"], set[int]],
        f_stop: threading.Event,
        interval: float,
        polled: bool,
    ) -> None:
        """Pass over the nodes until ``f_stop``; wait ``interval`` s or until a message arrives.

        The messages stored before the inbox was in place are taken first, in
        one scan of the LinkState (:meth:`_take_early`); where it cannot list
        them, the first pass (and every pass, if ``polled``) asks it for each
        node's messages. The passes visit only the nodes in ``ready`` (messages stored, not yet
        handed out), so a pass costs what arrived, not the number of nodes: a
        pass runs per stored message, and visiting every node each time made
        handing out a round's N messages O(N^2).
        """
        inbox, ready = inboxes
        first = polled or not self._take_early(state, inbox, ready)
        while not f_stop.is_set():
            self._arrived.clear()
            with self._passes:
                self._feeding = True
            for node_id in list(inbox if polled or first else ready):
                ready.discard(node_id)  # before reading its inbox: a later store adds it back
                waiting = inbox[node_id]
                if self.busy(node_id):
                    if waiting:
                        ready.add(node_id)  # visited again once the node is free
                    continue  # its next message waits (and may expire) in the LinkState
                if not (waiting or polled or first):
                    continue
                if polled or first:
                    for msg in flower_compat.next_message_ins(state, node_id):
                        self.start(node_id)
                        queue.put(msg)
                        break
                while waiting and not self.busy(node_id):
                    msg = waiting.popleft()
                    if msg.metadata.delivered_at:  # taken by get_message_ins already
                        continue
                    msg.metadata.delivered_at = now().isoformat()
                    self.start(node_id)
                    queue.put(msg)
                if waiting:
                    ready.add(node_id)  # more than one message: the next once this one is done
            first = False
            with self._passes:
                self._feeding = False
                self._passes.notify_all()
            self._arrived.wait(interval)

    @staticmethod
    def _take_early(state: Any, inbox: dict[int, "deque[Message]"], ready: set[int]) -> bool:
        """Put the messages stored before the inbox was in place into it, in one scan.

        Returns False if the LinkState cannot list them at once: the first
        pass then asks it node by node, each a scan of every stored message
        (O(N^2) at the start of a run: 64 s of 4,000 nodes' first round).
        """
        early = flower_compat.undelivered_messages_ins(state)
        if early is None:
            return False
        for message in reversed(early):  # before anything the tap queued since
            node_id = message.metadata.dst_node_id
            if node_id in inbox:
                inbox[node_id].appendleft(message)
                ready.add(node_id)
        return True

    def settle(self, timeout: float, quiet: float = 0.0005) -> None:
        """Wait until the grid has stopped storing messages and the feeder has queued them.

        That is: no message stored for ``quiet`` seconds and no pass of the
        feeder pending; at most ``timeout`` seconds. A worker that just took a
        round's first message calls this so that the whole round is queued
        before it takes its share.
        """
        deadline = time.monotonic() + timeout
        with self._passes:
            while (now_ := time.monotonic()) < deadline:
                if (
                    not self._feeding
                    and not self._arrived.is_set()
                    and now_ - self._last_arrival >= quiet
                ):
                    return
                self._passes.wait(min(quiet / 2, deadline - now_))

    def worker(self, original: Any) -> Any:
        """Return the engine's ``worker`` running ``original`` on checked queues."""

        def worker(messages: Queue[Message], replies: Queue[Message], *args: Any) -> Any:
            return original(_FreshMessages(messages, self), _TimelyReplies(replies, self), *args)

        return worker


class _FreshMessages:
    """The engine's message queue, without the messages that expired while queued."""

    def __init__(self, queue: Queue[Message], dispatch: Dispatch) -> None:
        self._queue, self._dispatch = queue, dispatch

    def get(self, block: bool = True, timeout: float | None = None) -> Message:
        while True:
            message = self._queue.get(block, timeout)
            if not expired(message):
                return message
            self._dispatch.finish(message.metadata.dst_node_id)
            log(
                DEBUG,
                "node %s: message %s expired before a worker was free; not run",
                message.metadata.dst_node_id,
                message.metadata.message_id,
            )
            if not block:
                raise Empty

    def put(self, message: Message) -> None:
        """Queue ``message`` again (taken but not run)."""
        self._queue.put(message)

    def qsize(self) -> int:
        """Return how many messages are queued (expired ones included)."""
        return self._queue.qsize()


class _TimelyReplies:
    """The engine's reply queue: frees the node, and drops replies past their deadline."""

    def __init__(self, queue: Queue[Message], dispatch: Dispatch) -> None:
        self._queue, self._dispatch = queue, dispatch

    def put(self, reply: Message, block: bool = True, timeout: float | None = None) -> None:
        self._dispatch.finish(reply.metadata.src_node_id)
        if expired(reply):
            log(
                DEBUG,
                "node %s: reply to %s came after its deadline; dropped",
                reply.metadata.src_node_id,
                reply.metadata.reply_to_message_id,
            )
            return
        self._queue.put(reply, block, timeout)
