"""The MLL-SGD engine: D hub strategies driven on one Flower Grid."""

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from flwr_multilevel.arrays import message_bytes
from flwr_multilevel.clock import round_slots
from flwr_multilevel.hierarchy import Hierarchy

from .hub import HubStrategy, WorkerSpec
from .peer import InProcessPeerLayer, PeerLayer

DISCOVERY = "query.worker"

StrategySource = Strategy | Callable[[], Strategy]


@dataclass
class RoundReport:
    """What one round did.

    Attributes
    ----------
    server_round : int
        The round (1-based); it ends at time step ``server_round * tau``.
    gossip : bool
        Whether the hubs mixed their models at the end of it.
    steps : dict[int, int]
        Gradient steps taken by each worker whose reply was averaged.
    dropped : list[str]
        One line per reply that was not averaged (or never came).
    hub_metrics : list[MetricRecord | None]
        Each hub strategy's aggregated train metrics.
    slots : int
        Time slots the round lasted on the virtual clock (tau for MLL-SGD).
    bytes_down : int
        Serialized array bytes the hubs sent to their workers.
    bytes_up : int
        Serialized array bytes the workers sent back to their hubs.
    bytes_hubs : int
        Serialized array bytes sent between hubs (0 in rounds without gossip).
    seconds : float
        Wall time of the round.
    """

    server_round: int
    gossip: bool
    steps: dict[int, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    hub_metrics: list[MetricRecord | None] = field(default_factory=list)
    slots: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    bytes_hubs: int = 0
    seconds: float = 0.0


class WorkerDiscoveryError(RuntimeError):
    """The grid does not hold the expected workers."""


def discover_workers(grid: Grid, num_workers: int, timeout: float = 120.0) -> list[int]:
    """Return the node ID of each worker: worker i is the node with ``partition-id`` i.

    Waits until ``num_workers`` nodes are connected, then asks every node for
    its partition id (a ``query.worker`` message).

    Raises
    ------
    WorkerDiscoveryError
        Too few nodes within ``timeout``, or partition ids that are not
        ``0..num_workers-1`` exactly once.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < num_workers:
        if time.monotonic() > deadline:
            raise WorkerDiscoveryError(
                f"expected {num_workers} nodes (one per worker), found {len(nodes)} after "
                f"{timeout:.0f} s; with `flwr run`, pass --federation-config "
                f'"num-supernodes={num_workers}"'
            )
        time.sleep(0.1)
    queries = [Message(RecordDict(), dst_node_id=n, message_type=DISCOVERY) for n in nodes]
    node_of: dict[int, int] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout):
        if reply.has_error():
            raise WorkerDiscoveryError(
                f"node {reply.metadata.src_node_id} failed the worker query: {reply.error.reason}"
            )
        partition = int(reply.content.metric_records["worker"]["partition-id"])  # type: ignore[arg-type]
        if partition in node_of:
            raise WorkerDiscoveryError(f"two nodes report partition-id {partition}")
        node_of[partition] = reply.metadata.src_node_id
    missing = sorted(set(range(num_workers)) - set(node_of))
    if missing:
        raise WorkerDiscoveryError(f"no node reported partition-id {missing[:5]}")
    return [node_of[i] for i in range(num_workers)]


class MLLSGD:
    """Multi-Level Local SGD over D Flower hub strategies.

    Implementation based on https://arxiv.org/abs/2007.13819 (Algorithm 1).

    Parameters
    ----------
    hierarchy : Hierarchy
        Hubs, worker weights and operating rates.
    tau : int
        Time steps per round.
    q : int
        Rounds between hub gossips.
    mixing : numpy.ndarray | None (default: None)
        Hub mixing matrix H for the in-process peer layer. Required unless
        ``peer_layer`` is given.
    strategy : Strategy | Callable[[], Strategy] (default: FedAvg())
        The aggregator of every hub: an instance (deep-copied per hub) or a
        factory. Stock strategies work unchanged.
    peer_layer : PeerLayer | None (default: None)
        Hub-to-hub gossip; defaults to :class:`InProcessPeerLayer` over H.
    train_config : Mapping | None (default: None)
        Entries sent to every worker each round (``lr``, ``batch-size``,
        ``seed``, data and model spec); ``time-steps`` is set to tau.
    timeout : float (default: 600)
        Seconds to wait for one round's replies.
    wait_for_slowest : bool (default: False)
        Run the synchronous baseline instead of MLL-SGD: every worker takes
        exactly tau steps per round (it is told rate 1) and the virtual clock
        advances by the slots the slowest worker needed at its true rate
        (:func:`flwr_multilevel.clock.round_slots`).
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        hierarchy: Hierarchy,
        *,
        tau: int,
        q: int,
        mixing: np.ndarray | None = None,
        strategy: StrategySource | None = None,
        peer_layer: PeerLayer | None = None,
        train_config: Mapping[str, int | float | str | bool] | None = None,
        timeout: float = 600.0,
        wait_for_slowest: bool = False,
    ) -> None:
        if peer_layer is None:
            if mixing is None:
                raise ValueError("MLLSGD needs a mixing matrix or a peer layer")
            peer_layer = InProcessPeerLayer(mixing)
        self.hierarchy = hierarchy
        self.tau = tau
        self.q = q
        self.strategy = strategy if strategy is not None else FedAvg()
        self.peer_layer = peer_layer
        self.train_config = {**(train_config or {}), "time-steps": tau}
        self.timeout = timeout
        self.wait_for_slowest = wait_for_slowest
        self.hubs: list[HubStrategy] = []
        self.hub_of_node: dict[int, int] = {}

    def _new_strategy(self) -> Strategy:
        if isinstance(self.strategy, Strategy):
            return copy.deepcopy(self.strategy)
        return self.strategy()

    def build_hubs(self, worker_nodes: Sequence[int]) -> list[HubStrategy]:
        """Create one :class:`HubStrategy` per hub, given each worker's node ID."""
        h = self.hierarchy
        self.hubs = []
        for hub in range(h.num_hubs):
            workers = {
                worker_nodes[i]: WorkerSpec(
                    i, float(h.weights[i]), 1.0 if self.wait_for_slowest else float(h.rates[i])
                )
                for i in h.members(hub)
            }
            self.hubs.append(HubStrategy(self._new_strategy(), hub, workers, self.tau))
        self.hub_of_node = {int(worker_nodes[i]): int(h.hub_of[i]) for i in range(h.num_workers)}
        return self.hubs

    def run_round(
        self, grid: Grid, server_round: int, hub_models: Sequence[ArrayRecord]
    ) -> tuple[list[ArrayRecord], RoundReport]:
        """Run one round (tau time steps) from the hub models ``y_d``; return the new ones.

        This is the whole path of a model update: hub -> workers -> hub
        strategy -> peer layer -> hubs.
        """
        start = time.perf_counter()
        report = RoundReport(server_round, gossip=server_round % self.q == 0)
        seed = int(self.train_config.get("seed", 0))
        report.slots = round_slots(
            seed, server_round, self.hierarchy.rates.tolist(), self.tau, self.wait_for_slowest
        )

        # Every hub sends its model y_d and per-worker instructions to its workers
        messages = [
            message
            for hub, model in zip(self.hubs, hub_models, strict=True)
            for message in hub.configure_train(
                server_round, model, ConfigRecord(dict(self.train_config)), grid
            )
        ]

        # Workers run tau time steps; one send_and_receive for all hubs at once
        replies = list(grid.send_and_receive(messages, timeout=self.timeout))
        report.bytes_down = sum(message_bytes(m) for m in messages)
        report.bytes_up = sum(message_bytes(r) for r in replies)
        if len(replies) < len(messages):
            report.dropped.append(f"{len(messages) - len(replies)} replies never came")

        # Route replies by sender; each hub averages its workers: z_d = sum v_i x_i
        routed: list[list[Message]] = [[] for _ in self.hubs]
        for reply in replies:
            hub_id = self.hub_of_node.get(reply.metadata.src_node_id)
            if hub_id is None:
                report.dropped.append(f"reply from unknown node {reply.metadata.src_node_id}")
                continue
            routed[hub_id].append(reply)
        averaged = []
        for hub, model, hub_replies in zip(self.hubs, hub_models, routed, strict=True):
            arrays, metrics = hub.aggregate_train(server_round, hub_replies)
            averaged.append(arrays if arrays is not None else model)
            report.steps.update(hub.report.steps)
            report.dropped.extend(hub.report.dropped)
            report.hub_metrics.append(metrics)

        # Every q rounds the hubs gossip: y_d = sum_j H[j, d] z_j (all at once)
        new_models = averaged
        if report.gossip:
            for hub_id, z_d in enumerate(averaged):
                self.peer_layer.publish(hub_id, server_round, z_d)
            gossips = [self.peer_layer.collect(d, server_round) for d in range(len(averaged))]
            new_models = [g.model for g in gossips]
            report.bytes_hubs = sum(g.bytes_in for g in gossips)
        report.seconds = time.perf_counter() - start
        return new_models, report

    # pylint: disable=too-many-arguments
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        *,
        worker_nodes: Sequence[int] | None = None,
        first_round: int = 1,
        on_round: Callable[[RoundReport, list[ArrayRecord]], bool | None] | None = None,
    ) -> list[ArrayRecord]:
        """Run ``num_rounds`` rounds from one shared initial model; return the hub models.

        Parameters
        ----------
        grid : Grid
            The Flower grid that reaches every worker.
        initial_arrays : ArrayRecord
            ``x_1``, given to every hub.
        num_rounds : int
            Rounds to run (``num_rounds * tau`` time steps).
        worker_nodes : Sequence[int] | None (default: None)
            Node ID of each worker; discovered through ``query.worker`` if None.
        first_round : int (default: 1)
            Number of the first round.
        on_round : Callable | None (default: None)
            Called after every round with its report and the new hub models
            (record, evaluate, checkpoint there); returning True stops the run.
        """
        if worker_nodes is None:
            worker_nodes = discover_workers(grid, self.hierarchy.num_workers, self.timeout)
        self.build_hubs(worker_nodes)
        log(
            INFO,
            "MLL-SGD: %s hubs, %s workers, tau=%s, q=%s, %s rounds",
            self.hierarchy.num_hubs,
            self.hierarchy.num_workers,
            self.tau,
            self.q,
            num_rounds,
        )
        models = [initial_arrays] * self.hierarchy.num_hubs
        for server_round in range(first_round, first_round + num_rounds):
            models, report = self.run_round(grid, server_round, models)
            if report.dropped:
                log(WARNING, "round %s: %s replies not averaged", server_round, len(report.dropped))
            if on_round is not None and on_round(report, models):
                log(INFO, "MLL-SGD: stopped after round %s", server_round)
                break
        return models
