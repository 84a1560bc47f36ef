"""Which node is which worker: the hubs ask every node of the grid once, before round 1."""

import time
from collections.abc import Callable, Collection, Sequence
from logging import WARNING

from flwr.common.logger import log
from flwr.serverapp import Grid

from flwr_multilevel import flower_compat
from flwr_multilevel.clients.mod import discovery_message
from flwr_multilevel.errors import WorkerDiscoveryError
from flwr_multilevel.protocol.keys import PARTITION_ID, WORKER, WORKER_ID

from .deadline import set_deadline

SETTLE = 1.0  # seconds a simulation's node count holds before it counts as final


def simulated_nodes(grid: Grid, timeout: float, settle: float = SETTLE) -> list[int] | None:
    """Return every node of a grid whose nodes are all there from the start; None for others.

    Flower's simulation engine registers all its SuperNodes at once when it
    starts (before Ray), and :class:`~flwr_multilevel.engines.local_grid.LocalGrid`
    (``nodes_fixed``) has them from the start: their node set is final once it
    has held for ``settle`` seconds. A deployment's nodes connect when they come
    up, so its grid gets None.
    """
    if not (flower_compat.is_simulation_grid(grid) or getattr(grid, "nodes_fixed", False)):
        return None
    nodes, since = sorted(grid.get_node_ids()), time.monotonic()
    deadline = since + timeout
    while not (nodes and time.monotonic() - since >= settle) and time.monotonic() < deadline:
        time.sleep(0.05)
        if (now := sorted(grid.get_node_ids())) != nodes:
            nodes, since = now, time.monotonic()
    return nodes


def too_few_nodes(needed: int, found: int) -> str:
    """Return the one line of a simulation with fewer SuperNodes than workers, and the fix.

    Examples
    --------
    >>> print(too_few_nodes(4, 2))  # doctest: +NORMALIZE_WHITESPACE
    expected 4 nodes (one per worker), the simulation has 2 SuperNodes:
    flwr run . --federation-config "num-supernodes=4"
    """
    return (
        f"expected {needed} nodes (one per worker), the simulation has {found} SuperNodes: "
        f'flwr run . --federation-config "num-supernodes={needed}"'
    )


def absent_node(worker_id: int) -> int:
    """Return the stand-in node ID of a worker that never connected (no node has it).

    Such a worker is sent nothing and counted missing every round.

    Examples
    --------
    >>> absent_node(0), absent_node(7)
    (-1, -8)
    """
    return -1 - int(worker_id)


def discover_workers(
    grid: Grid,
    worker_ids: Sequence[int],
    timeout: float,
    enough: Callable[[Collection[int]], bool] | None = None,
) -> dict[int, int]:
    """Return the node ID of each expected worker, asking every connected node.

    Waits until ``len(worker_ids)`` nodes are connected (a simulation, whose
    SuperNodes are all registered at once, fails as soon as its count is
    final: :func:`simulated_nodes`), then sends each a discovery message that
    :func:`flwr_multilevel.clients.multilevel_mod` answers with the node's
    worker id (node config ``worker-id`` or ``partition-id``).

    Parameters
    ----------
    grid : Grid
        The grid of the run.
    worker_ids : Sequence[int]
        The workers expected.
    timeout : float
        Seconds to wait for the nodes to connect, and then for their answers.
    enough : Callable[[Collection[int]], bool] | None (default: None)
        Whether the workers found may go on without the others (a deployment:
        a worker whose SuperNode is gone). None: every expected worker must be
        found.

    Returns
    -------
    dict[int, int]
        Node ID of every worker found (all of them, unless ``enough`` allowed fewer).

    Raises
    ------
    WorkerDiscoveryError
        Too few nodes within ``timeout``, a node that cannot answer, a worker
        id reported twice, or an expected worker that no node reports.
    """
    if len(list(grid.get_node_ids())) < len(worker_ids):  # a simulation's count is known
        fixed = simulated_nodes(grid, timeout)
        if fixed is not None and len(fixed) < len(worker_ids):
            raise WorkerDiscoveryError(too_few_nodes(len(worker_ids), len(fixed)))
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < len(worker_ids):
        if time.monotonic() > deadline and enough is not None and nodes:
            break  # go on with the nodes there are, if their workers are enough (below)
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
    if missing and enough is not None and node_of and enough(set(node_of)):
        log(
            WARNING,
            "workers %s did not connect within %g s: the run goes on without them "
            "(each counted missing every round)",
            missing,
            timeout,
        )
        return {w: node_of[w] for w in worker_ids if w in node_of}
    silent = sorted(set(nodes) - {reply.metadata.src_node_id for reply in replies})
    if missing and silent:
        raise WorkerDiscoveryError(
            f"{len(silent)} of {len(nodes)} nodes did not answer the discovery within "
            f"{timeout:g} s (first: node {silent[0]})"
        )
    if missing:
        raise WorkerDiscoveryError(f"no node is worker {missing[:5]} (node config {PARTITION_ID})")
    return {w: node_of[w] for w in worker_ids}
