"""Several workers on one SuperNode: this app's ``flwr run .`` on Flower's default federation.

Flower's local simulation federation has 2 SuperNodes unless told otherwise,
and the default experiment has 12 workers. This app's ClientApp takes its
worker's identity from each train message (``worker-id``: its data partition,
its coins and its mini-batches), not from its node, so any node can run any
worker. :func:`share_nodes` gives the ServerApp a grid of one virtual node per
worker, each worker on the node of partition ``i mod N``; a node runs its
workers' messages one after the other. The numbers are those of one node per
worker. Apps that load their data by ``partition-id`` (Flower's quickstart)
cannot share nodes: they get one line saying how many SuperNodes they need
(:func:`~flwr_multilevel.strategies.discovery.discover_workers`).
"""

import time
from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any
from uuid import uuid4

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_multilevel import flower_compat
from flwr_multilevel.protocol.keys import DISCOVERY, WORKER, WORKER_ID
from flwr_multilevel.strategies.discovery import discover_workers, simulated_nodes

FIRST_VIRTUAL_NODE = 1000  # virtual node FIRST_VIRTUAL_NODE + i is worker i
POLL = 0.02  # seconds between polls for replies
MIN_TTL = 1e-3  # a message past its deadline still goes out with a ttl > 0 (and expires)


class SharedNodes(Grid):
    """A grid of one virtual node per worker over a simulation's fewer SuperNodes.

    Parameters
    ----------
    grid : Grid
        The simulation's grid.
    hosts : Mapping[int, int]
        The node that runs each worker: worker id -> node id of ``grid``.

    A discovery message to virtual node ``FIRST_VIRTUAL_NODE + i`` is answered
    here (worker i); every other message goes to its worker's host, and the
    reply comes back from the virtual node it was sent to.
    """

    nodes_fixed = True  # every virtual node is there from the start (strategies.discovery)

    def __init__(self, grid: Grid, hosts: Mapping[int, int]) -> None:
        self.grid = grid
        self.worker_of = {FIRST_VIRTUAL_NODE + w: w for w in sorted(hosts)}
        self.hosts = dict(hosts)
        self._sent: dict[str, tuple[str, Message]] = {}  # host message id -> (id, message)
        self._answers: dict[str, Message] = {}  # discovery replies, by message id

    def set_run(self, run_id: Any) -> None:
        """Set the run of the underlying grid."""
        self.grid.set_run(run_id)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        """The run of the underlying grid."""
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # type: ignore[no-untyped-def] # noqa: D102,E501
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Return one virtual node ID per worker."""
        return list(self.worker_of)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Send each message to its worker's host (a discovery is answered here)."""
        ids, forwarded = [], []
        for message in messages:
            node = message.metadata.dst_node_id
            if (worker := self.worker_of.get(node)) is None:
                raise ValueError(f"node {node} is not one of the workers' virtual nodes")
            message_id = uuid4().hex
            flower_compat.set_message_id(message, message_id)
            ids.append(message_id)
            if isinstance(message.content.get(DISCOVERY), ConfigRecord):
                answer = RecordDict({WORKER: MetricRecord({WORKER_ID: worker})})
                self._answers[message_id] = Message(answer, reply_to=message)
                continue
            meta = message.metadata
            host = Message(
                message.content,
                dst_node_id=self.hosts[worker],
                message_type=meta.message_type,
                ttl=max(meta.ttl - (time.time() - meta.created_at), MIN_TTL),
                group_id=meta.group_id,
            )
            forwarded.append((host, message_id, message))
        self.grid.push_messages([host for host, _, _ in forwarded])
        for host, message_id, message in forwarded:
            self._sent[host.metadata.message_id] = (message_id, message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies to ``message_ids``, each from the virtual node it was sent to."""
        wanted = set(message_ids)
        replies = [self._answers.pop(i) for i in sorted(wanted & set(self._answers))]
        hosts = [h for h, (i, _) in self._sent.items() if i in wanted]
        for reply in self.grid.pull_messages(hosts) if hosts else ():
            _, message = self._sent.pop(reply.metadata.reply_to_message_id)
            body = reply.error if reply.has_error() else reply.content
            replies.append(Message(body, reply_to=message))  # type: ignore[call-overload]
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages`` and return their replies within ``timeout`` seconds."""
        pending = set(self.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {r.metadata.reply_to_message_id for r in got}
            if not pending or (end is not None and time.monotonic() >= end):
                break
            time.sleep(POLL)
        return replies


def share_nodes(grid: Grid, num_workers: int, timeout: float) -> Grid:
    """Return ``grid``, or on a simulation with fewer SuperNodes than workers, a shared view.

    With N < ``num_workers`` SuperNodes, worker i runs on the node of
    partition ``i mod N`` (:class:`SharedNodes`); one line in the log says so,
    and how to give every worker its own node.
    """
    if len(list(grid.get_node_ids())) >= num_workers:
        return grid
    nodes = simulated_nodes(grid, timeout)
    if not nodes or len(nodes) >= num_workers:
        return grid
    node_of = discover_workers(grid, list(range(len(nodes))), timeout)
    log(
        INFO,
        "%s workers on %s SuperNodes: worker i runs on the node of partition i mod %s "
        '(one node per worker: --federation-config "num-supernodes=%s")',
        num_workers,
        len(nodes),
        len(nodes),
        num_workers,
    )
    return SharedNodes(grid, {w: node_of[w % len(nodes)] for w in range(num_workers)})
