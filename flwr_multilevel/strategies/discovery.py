"""Which node is which worker: the hubs ask every node of the grid once, before round 1."""

import time
from collections.abc import Sequence

from flwr.serverapp import Grid

from flwr_multilevel.clients.mod import discovery_message
from flwr_multilevel.errors import WorkerDiscoveryError
from flwr_multilevel.protocol.keys import PARTITION_ID, WORKER, WORKER_ID

from .deadline import set_deadline


def discover_workers(grid: Grid, worker_ids: Sequence[int], timeout: float) -> dict[int, int]:
    """Return the node ID of each expected worker, asking every connected node.

    Waits until ``len(worker_ids)`` nodes are connected, then sends each a
    discovery message that :func:`flwr_multilevel.clients.multilevel_mod`
    answers with the node's worker id (node config ``worker-id`` or
    ``partition-id``).

    Raises
    ------
    WorkerDiscoveryError
        Too few nodes within ``timeout``, a node that cannot answer, a worker
        id reported twice, or an expected worker that no node reports.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < len(worker_ids):
        if time.monotonic() > deadline:
            raise WorkerDiscoveryError(
                f"expected {len(worker_ids)} nodes (one per worker), found {len(nodes)} after "
                f"{timeout:.0f} s; in simulation pass --federation-config "
                f'"num-supernodes={len(worker_ids)}"'
            )
        time.sleep(0.1)
    asked = set_deadline([discovery_message(n) for n in nodes], timeout)
    replies = list(grid.send_and_receive(asked, timeout=timeout))
    node_of: dict[int, int] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if node not in nodes:
            continue  # the grid's own "expired" reply: counted below as no answer
        if reply.has_error():
            raise WorkerDiscoveryError(
                f"node {node} could not say which worker it is (is multilevel_mod in its "
                f"ClientApp's mods?): {' '.join(str(reply.error.reason).split())[:200]}"
            )
        record = reply.content.metric_records.get(WORKER)
        value = None if record is None else record.get(WORKER_ID)
        if isinstance(value, bool) or not isinstance(value, int):
            raise WorkerDiscoveryError(f"node {node} answered the discovery without a {WORKER_ID}")
        if value in node_of:
            raise WorkerDiscoveryError(f"nodes {node_of[value]} and {node} are both worker {value}")
        node_of[value] = node
    missing = sorted(set(worker_ids) - set(node_of))
    silent = sorted(set(nodes) - {reply.metadata.src_node_id for reply in replies})
    if missing and silent:
        raise WorkerDiscoveryError(
            f"{len(silent)} of {len(nodes)} nodes did not answer the discovery within "
            f"{timeout:g} s (first: node {silent[0]})"
        )
    if missing:
        raise WorkerDiscoveryError(f"no node is worker {missing[:5]} (node config {PARTITION_ID})")
    return {w: node_of[w] for w in worker_ids}
