"""The one place that starts Flower's simulation engine from Python.

``flwr.simulation.run_simulation`` is deprecated in Flower 1.42 in favour of
``flwr run``; when it goes, only this module changes.
"""

import functools
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from flwr_multilevel import flower_compat
from flwr_multilevel.engines.dispatch import Dispatch
from flwr_multilevel.errors import SimulationError

POLL_INTERVAL = 0.01  # seconds between reply polls of Flower's in-memory grid (its default: 0.1)
SETTLE = 0.005  # seconds a worker waits for the feeder to queue the rest of a round
FEEDER_NODES = 16  # up to this many nodes the engine's node feeder also waits POLL_INTERVAL
FAST_POLL = 0.001  # seconds between the grid's reply polls up to FAST_POLL_NODES nodes
FAST_POLL_NODES = 64
SLOW_POLL = 0.1  # the longest floor of the wait between the grid's reply polls (Flower's own)
POLL_SHARE = 0.1  # the grid's reply polls take at most this share of the time (tune_grid)


def poll_interval(nodes: int) -> float:
    """Return how often the engine polls for ``nodes`` nodes' messages or replies, in seconds.

    Every poll scans the pending messages, so short intervals pay only while
    there are few of them: ``FAST_POLL`` up to ``FAST_POLL_NODES`` nodes, then
    ``POLL_INTERVAL`` per 200 nodes, at most ``SLOW_POLL``.

    Examples
    --------
    >>> poll_interval(12), poll_interval(200), poll_interval(1000), poll_interval(10**5)
    (0.001, 0.01, 0.05, 0.1)
    """
    if nodes <= FAST_POLL_NODES:
        return FAST_POLL
    return round(min(SLOW_POLL, POLL_INTERVAL * max(1.0, nodes / 200)), 6)


def tune_grid(grid: Grid, interval: float | None = None, share: float = POLL_SHARE) -> None:
    """Make the simulation engine's grid poll for replies every ``interval`` seconds or more.

    Flower's ``InMemoryGrid`` sleeps ``pull_interval`` (0.1 s) between polls,
    so every round of a short simulation waits for the next multiple of it.
    Each poll scans every reply still pending, under the LinkState's lock
    (about 4 us per message): at a fixed interval a round of N workers,
    which lasts in proportion to N, would cost O(N^2). So after every poll
    the wait becomes ``max(interval, poll time / share)``: polling takes at
    most ``share`` of the time, and as the replies come in and polls get
    cheap the wait shrinks back to ``interval``. Grids without that setting
    are left as they are.

    Examples
    --------
    >>> class Polling:
    ...     pull_interval = 0.1
    ...     def pull_messages(self, message_ids):
    ...         return []
    >>> grid = Polling()
    >>> tune_grid(grid)  # type: ignore[arg-type]
    >>> grid.pull_interval
    0.01
    """
    floor = POLL_INTERVAL if interval is None else interval
    flower_compat.set_grid_pull_interval(grid, floor)
    pull = getattr(grid, "pull_messages", None)
    if pull is None or flower_compat.grid_pull_interval(grid) != floor:
        return  # a grid that does not poll

    def timed_pull(message_ids: Any) -> Any:
        began = time.perf_counter()
        replies = pull(message_ids)
        wait = max(floor, (time.perf_counter() - began) / share)
        if abs(wait - (flower_compat.grid_pull_interval(grid) or 0.0)) > 0.1 * floor:
            flower_compat.set_grid_pull_interval(grid, wait)
        return replies

    grid.pull_messages = timed_pull  # type: ignore[method-assign]


@contextmanager
def fast_node_polling(interval: float | None = None, groups: bool = True) -> Iterator[None]:
    """Within the block, the simulation engine's nodes look for messages every ``interval`` s.

    Flower's engine moves messages from its LinkState to the workers in a
    thread that waits 0.1 s between passes (``vce_api.add_messages_to_queue``),
    which adds up to 0.1 s to every round; this swaps in the same loop with a
    shorter wait (``POLL_INTERVAL`` by default), and puts Flower's back after.
    It also keeps timed-out work from piling up (:class:`.dispatch.Dispatch`):
    one message in flight per node, and expired messages and late replies are
    dropped instead of run and stored. With ``groups``, each Ray actor call
    runs a group of messages (:mod:`~flwr_multilevel.engines.ray_groups`).

    Raises
    ------
    FlowerCompatError
        Flower's engine no longer has the feeder or worker this replaces
        (:func:`flwr_multilevel.flower_compat.engine_feeder`).
    """
    dispatch = Dispatch()
    feeder = dispatch.feeder(POLL_INTERVAL if interval is None else interval)
    with flower_compat.engine_feeder(feeder), _grouped_messages(dispatch, groups) as grouped:
        # the engine's workers (grouped or Flower's own), on checked queues
        with flower_compat.engine_worker(lambda flowers: dispatch.worker(grouped or flowers)):
            yield


@contextmanager
def _grouped_messages(dispatch: Dispatch, groups: bool) -> Iterator[Any]:
    """Within the block, each Ray actor call runs a group of messages (:mod:`.ray_groups`).

    The engine's actors become :class:`~flwr_multilevel.engines.ray_groups.GroupActor`;
    yields the engine ``worker`` that takes groups, or None (nothing changed)
    if ``groups`` is False or Flower's engine lacks what groups need (then
    :func:`flwr_multilevel.flower_compat.engine_actor` logs one warning).
    """
    if not groups:
        yield None
        return
    # pylint: disable-next=import-outside-toplevel
    from . import ray_groups

    with flower_compat.engine_actor(ray_groups.RayGroupActor) as swapped:
        yield (
            functools.partial(
                ray_groups.grouped_worker,
                lanes=ray_groups.Lanes(),
                settle=lambda: dispatch.settle(SETTLE),
            )
            if swapped
            else None
        )


def ray_init_args(address: str = "", gpus_per_worker: float = 0.0) -> dict[str, Any]:
    """Return the arguments of Flower's ``ray.init`` call (``backend_config["init_args"]``).

    Empty ``address``: a private Ray instance of this machine's CPUs (and, with
    ``gpus_per_worker > 0``, its GPUs), started for the run and stopped after
    it: ``address="local"``, since without an address ``ray.init`` would
    attach to the cluster in ``RAY_ADDRESS`` or to the last one ``ray start``
    began on this machine (another user's, say). Else Ray attaches to the
    cluster at ``address`` (``auto``: ``RAY_ADDRESS``, or the one ``ray start``
    began last on this machine; or ``host:port`` of its head), whose
    resources are its own: Ray refuses ``num_cpus`` or ``num_gpus`` there.

    Examples
    --------
    >>> ray_init_args("10.0.0.5:6379")
    {'address': '10.0.0.5:6379'}
    >>> sorted(ray_init_args().items())[0]
    ('address', 'local')
    """
    if address:
        return {"address": address}
    num_gpus = 0
    if gpus_per_worker > 0:
        import torch  # pylint: disable=import-outside-toplevel

        num_gpus = torch.cuda.device_count()
    return {"address": "local", "num_cpus": os.cpu_count() or 1, "num_gpus": num_gpus}


def _check_not_nested() -> None:
    """Refuse to start Flower's engine where Ray is already initialised in this process.

    Flower's engine skips ``ray.init`` then, uses that connection, and calls
    ``ray.shutdown()`` when the run ends: inside a Ray task or actor (a sweep's
    run) that would cut the task's own connection, and a caller's ``ray.init``
    would be undone.

    Raises
    ------
    SimulationError
        Ray is initialised in this process.
    """
    import ray  # pylint: disable=import-outside-toplevel

    if ray.is_initialized():
        raise SimulationError(
            "Ray is already initialised in this process (a Ray task, or a caller's ray.init): "
            "simulation.backend=ray would nest Flower's engine in it and shut that connection "
            "down; use simulation.backend=inprocess (the same numbers) or simulation.ray_address"
        )


def run_in_simulation(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    cpus_per_worker: float,
    gpus_per_worker: float = 0.0,
    groups: bool = True,
    address: str = "",
) -> None:
    """Run ``server_app`` with ``num_supernodes`` virtual nodes of ``client_app`` on Ray.

    With an empty ``address`` Ray is a private instance of this machine; with
    ``gpus_per_worker > 0`` it is given every visible GPU and packs
    ``1 / gpus_per_worker`` workers on each. With ``address`` (``auto`` or
    ``host:port``) the engine attaches to that running cluster as one more
    driver: its actors (as many as the cluster's nodes hold at
    ``cpus_per_worker`` and ``gpus_per_worker`` each) are this driver's and
    end with it, and the cluster itself is never stopped or changed. With
    ``groups`` each actor call runs a group of messages
    (:mod:`~flwr_multilevel.engines.ray_groups`).

    Raises
    ------
    SimulationError
        Ray is already initialised in this process (:func:`_check_not_nested`).
    """
    # pylint: disable-next=import-outside-toplevel
    from flwr.simulation import run_simulation

    _check_not_nested()
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker},
        "init_args": ray_init_args(address, gpus_per_worker),
    }
    flower = logging.getLogger("flwr")
    notice = _DropDeprecationNotice()
    flower.addFilter(notice)  # this module is the one place that knows; users need not see it
    # The feeder visits every node per pass: with many nodes, short waits cost more than they save
    feeder_wait = min(0.1, POLL_INTERVAL * max(1.0, num_supernodes / FEEDER_NODES))
    try:
        with (
            warnings.catch_warnings(),
            fast_node_polling(feeder_wait, groups),
            flower_compat.quiet_engine_errors(),  # the hubs summarise failures per round
        ):
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes,
                backend_config=backend_config,  # type: ignore[arg-type]
            )
    finally:
        flower.removeFilter(notice)


class _DropDeprecationNotice(logging.Filter):
    """Drop Flower's "run_simulation is deprecated" banner (logged, not warned)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("DEPRECATED FEATURE" in message and "run_simulation" in message)
