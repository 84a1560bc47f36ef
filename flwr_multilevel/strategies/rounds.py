"""The hubs of MLL-SGD on a Flower Grid, and one round across them.

Every round is the whole path of a model update: hubs -> workers (``y_d``) ->
tau local time steps -> hub strategies (``z_d = sum v_i x_i``) -> peer layer ->
hubs (``y_d = sum_j H[j, d] z_j``). :class:`~flwr_multilevel.strategies.MLLSGD`
runs the rounds.
"""

import math
import time
from collections.abc import Collection, Mapping, Sequence
from logging import WARNING
from typing import Any, cast

import networkx as nx
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from flwr_multilevel.errors import ConfigError, WorkerDiscoveryError
from flwr_multilevel.model.clock import round_slots
from flwr_multilevel.model.hierarchy import Hierarchy, build_hierarchy, hub_sizes
from flwr_multilevel.model.mixing import consensus_distance, mixing_matrix, weighted_average
from flwr_multilevel.model.topology import hub_graph
from flwr_multilevel.protocol.arrays import message_bytes, stack, unstack
from flwr_multilevel.protocol.keys import CONSENSUS, NUM_EXAMPLES, SEED, WORKER_STEPS
from flwr_multilevel.strategies.deadline import one_reply_each, set_deadline
from flwr_multilevel.strategies.discovery import absent_node, discover_workers
from flwr_multilevel.strategies.hub import HubStrategy, Missing, WorkerSpec
from flwr_multilevel.strategies.one_line import client_failures
from flwr_multilevel.strategies.peer import InProcessPeerLayer, PeerLayer
from flwr_multilevel.strategies.report import (
    OnRound,
    RoundReport,
    failure_summary,
    round_record,
)
from flwr_multilevel.strategies.settings import (
    at_least,
    train_config,
    worker_rates,
    worker_weights,
)


class MLLSGDRounds(Strategy):
    """The hubs of MLL-SGD, their models and one round across them (:meth:`run_round`).

    The base of :class:`~flwr_multilevel.strategies.MLLSGD`, which adds the run
    (``start``), federated evaluation and checkpoints. It takes the arguments
    documented there and checks them all.
    """

    # pylint: disable=too-many-arguments,too-many-instance-attributes,too-many-locals
    def __init__(
        self,
        strategy: Strategy | None = None,
        *,
        hubs: int | Sequence[int] | str,
        tau: int = 1,
        q: int = 1,
        graph: str | nx.Graph = "path",
        mixing: str | np.ndarray = "auto",
        rates: float | Sequence[float] = 1.0,
        weights: str | Sequence[float] = NUM_EXAMPLES,
        seed: int = 0,
        missing: Missing = "stay",
        clip_norm: float | None = None,
        min_replies: float = 0.0,
        evaluate_every: int = 1,
        evaluate_hubs: bool = False,
        wait_for_slowest: bool = False,
        peer_layer: PeerLayer | None = None,
        hub_ids: Sequence[int] | None = None,
        max_failed_rounds: int = 5,
        discovery_timeout: float = 60.0,
        partial_discovery: bool = False,
        on_round: OnRound | None = None,
    ) -> None:
        self.strategy = strategy if strategy is not None else FedAvg()
        if not isinstance(self.strategy, Strategy):
            raise ValueError(f"strategy: expected a Flower Strategy, got {type(strategy).__name__}")
        self.sizes = hub_sizes(None, hubs, keys=("hubs", "hubs"))
        self.tau, self.q = at_least("tau", tau, 1), at_least("q", q, 1)
        self.seed = at_least("seed", seed, 0)
        self.rates = worker_rates(rates, self.num_workers)
        self._weights = worker_weights(weights, self.num_workers)
        try:
            self.graph = hub_graph(graph, self.num_hubs, seed=seed)
        except ConfigError as err:
            raise ValueError(f"graph: {err.message}") from None
        self._mixing_method = mixing
        self.mixing: np.ndarray | None = None
        if missing not in ("stay", "renormalize"):
            raise ValueError(f"missing: expected 'stay' or 'renormalize', got {missing!r}")
        self.missing = missing
        self.clip_norm, self.min_replies = clip_norm, min_replies
        HubStrategy(self.strategy, 0, {}, self.tau, missing, clip_norm, min_replies)  # checks
        self.evaluate_every = at_least("evaluate_every", evaluate_every, 0)
        self.evaluate_hubs = bool(evaluate_hubs)
        self.wait_for_slowest = bool(wait_for_slowest)
        self.hub_ids = list(range(self.num_hubs)) if hub_ids is None else sorted(set(hub_ids))
        if not self.hub_ids or not set(self.hub_ids) <= set(range(self.num_hubs)):
            raise ValueError(
                f"hub_ids: expected hubs among 0..{self.num_hubs - 1}, got {hub_ids!r}"
            )
        if peer_layer is None and len(self.hub_ids) < self.num_hubs:
            raise ValueError(
                "peer_layer: a server that runs only some hubs needs a networked peer layer"
            )
        self.peer_layer = peer_layer
        self.max_failed_rounds = at_least("max_failed_rounds", max_failed_rounds, 0)
        self._failed_in_a_row: dict[int, int] = {}
        self.discovery_timeout = float(discovery_timeout)
        self.partial_discovery = bool(partial_discovery)
        self.on_round = on_round
        self.hubs: dict[int, HubStrategy] = {}
        self.hub_of_node: dict[int, int] = {}
        self.models: dict[int, ArrayRecord] = {}
        self.report = RoundReport(0, gossip=False)
        self._restored: Mapping[str, Any] | None = None
        if all(w is not None for w in self._weights):
            self._fix_mixing()  # errors in the graph or H show now, not after round 1

    @property
    def num_hubs(self) -> int:
        """Number of hubs D."""
        return len(self.sizes)

    @property
    def num_workers(self) -> int:
        """Number of workers N."""
        return sum(self.sizes)

    @property
    def hierarchy(self) -> Hierarchy:
        """Hubs, weights ``w_i`` and rates; unknown weights count as their hub's mean."""
        weights = list(self._weights)
        for hub in self.hubs.values():  # the hubs fix w_i from their workers' first replies
            for spec in hub.workers.values():
                weights[spec.worker_id] = spec.weight
        known = [w for w in weights if w is not None]
        fill = float(np.mean(known)) if known else 1.0
        return build_hierarchy(
            self.sizes, np.array([fill if w is None else w for w in weights]), self.rates
        )

    def _fix_mixing(self) -> np.ndarray:
        """Return H, built once from the graph and the hub weights b."""
        if self.mixing is None:
            try:
                self.mixing = mixing_matrix(self.graph, self.hierarchy.b, self._mixing_method)
            except ConfigError as err:
                raise ValueError(f"mixing: {err.message}") from None
        return self.mixing

    def setup(self, grid: Grid, initial_arrays: ArrayRecord) -> None:
        """Find the workers on ``grid`` and build the hubs, all starting from ``x_1``."""
        worker_ids = [w for d in self.hub_ids for w in self._members(d)]
        enough = self._enough_workers if self.partial_discovery else None
        with client_failures() as failures:  # a ClientApp that fails here: one line, its cause
            try:
                node_of = discover_workers(grid, worker_ids, self.discovery_timeout, enough)
            except WorkerDiscoveryError as err:
                raise failures.explain(err) from None
        self.hubs, self.hub_of_node = {}, {}
        for d in self.hub_ids:
            workers = {
                node_of.get(w, absent_node(w)): WorkerSpec(
                    w, self._weights[w], 1.0 if self.wait_for_slowest else float(self.rates[w])
                )
                for w in self._members(d)
            }
            self.hubs[d] = HubStrategy(
                self.strategy, d, workers, self.tau, self.missing, self.clip_norm, self.min_replies
            )
            self.hubs[d].log_rounds = False  # MLLSGD logs one line per round for all its hubs
            self.hub_of_node.update({node: d for node in workers})
        self.models = {d: initial_arrays for d in self.hub_ids}

    def _enough_workers(self, found: Collection[int]) -> bool:
        """Whether every hub has at least one and ``min_replies`` of its workers in ``found``.

        Fewer, and no round of that hub could count: the paper's hub averages
        its own workers' models (a worker that never came takes no step).
        """
        for d in self.hub_ids:
            members = self._members(d)
            need = max(1, math.ceil(self.min_replies * len(members) - 1e-9))
            if sum(w in found for w in members) < need:
                return False
        return True

    def _members(self, hub: int) -> range:
        start = sum(self.sizes[:hub])
        return range(start, start + self.sizes[hub])

    def check_train_config(
        self, train_config_: ConfigRecord | Mapping[str, Any] | None
    ) -> ConfigRecord:
        """Return the config every worker receives: the caller's, plus ``time-steps`` and ``seed``.

        Raises
        ------
        ValueError
            A key the hubs set per worker (``keys.PER_WORKER``), a ``time-steps``
            other than tau, or a ``seed`` that is not an integer >= 0.
        """
        return train_config(train_config_, self.tau, self.seed)

    def run_round(
        self, grid: Grid, server_round: int, config: ConfigRecord, timeout: float
    ) -> RoundReport:
        """Run one round (tau time steps); the whole path of a model update.

        hubs -> workers (``y_d``) -> tau local time steps -> hub strategies
        (``z_d = sum v_i x_i``) -> peer layer -> hubs (``y_d = sum_j H[j, d] z_j``).
        """
        start = time.perf_counter()
        self.report = report = RoundReport(server_round, gossip=server_round % self.q == 0)
        report.slots = round_slots(
            int(cast(int, config[SEED])),
            server_round,
            self.rates.tolist(),
            self.tau,
            self.wait_for_slowest,  # type: ignore[arg-type]
        )
        # Every hub sends its model y_d and per-worker instructions to its workers
        messages = list(self.configure_train(server_round, ArrayRecord(), config, grid))
        # Workers run tau time steps; one send_and_receive serves every hub. The
        # round's timeout is every message's ttl: work that cannot make it is dropped
        messages = set_deadline(messages, timeout)
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        report.bytes_down = sum(message_bytes(m) for m in messages)
        report.bytes_up = sum(message_bytes(r) for r in replies)
        replies = one_reply_each(messages, replies, timeout)  # a timed-out worker: an error
        # Each hub strategy averages its workers: z_d = sum_i v_i x_i
        averages = self._average(server_round, replies)
        # Every q rounds the hubs gossip through the peer layer: y_d = sum_j H[j, d] z_j
        self.models = self._gossip(server_round, averages) if report.gossip else averages
        report.seconds = time.perf_counter() - start
        return report

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Return every hub's train messages, each hub sending its own model ``y_d``.

        ``arrays`` is not used: the hubs hold their own models (set by :meth:`setup`).
        """
        del arrays
        return [
            message
            for d, hub in self.hubs.items()
            for message in hub.configure_train(server_round, self.models[d], config, grid)
        ]

    def _average(self, server_round: int, replies: list[Message]) -> dict[int, ArrayRecord]:
        """Route replies to their hubs; return every hub's ``z_d`` (its old model if it failed)."""
        report = self.report
        routed: dict[int, list[Message]] = {d: [] for d in self.hubs}
        for reply in replies:
            hub_id = self.hub_of_node.get(reply.metadata.src_node_id)
            if hub_id is None:
                report.dropped.append(f"node {reply.metadata.src_node_id}: not a worker of any hub")
            else:
                routed[hub_id].append(reply)
        averages = {}
        for d, hub in self.hubs.items():
            arrays, metrics = hub.aggregate_train(server_round, routed[d])
            averages[d] = arrays if arrays is not None else self.models[d]
            report.steps.update(hub.report.steps)
            report.dropped.extend(hub.report.dropped)
            report.missing.extend(hub.report.missing)
            report.hub_metrics[d] = metrics
            if hub.report.failed:
                report.failed_hubs[d] = hub.report.error or next(
                    iter(hub.report.dropped), "no worker replied"
                )
        return averages

    def _gossip(
        self, server_round: int, averages: dict[int, ArrayRecord]
    ) -> dict[int, ArrayRecord]:
        """Publish every local hub's ``z_d`` to the peer layer, then collect its ``y_d``.

        A hub that kept its model this round (cut off from its workers, or its
        strategy failed) sits the gossip out: it keeps its model and its
        neighbours leave it out (its weight stays with them).
        """
        if self.peer_layer is None:
            self.peer_layer = InProcessPeerLayer(self._fix_mixing())
        sharing = [d for d in averages if d not in self.report.failed_hubs]
        for d in averages:  # (the round's one warning line says so, with its reason)
            if d not in sharing:
                self.peer_layer.withhold(d, server_round, self.report.failed_hubs[d])
        for d in sharing:
            self.peer_layer.publish(d, server_round, averages[d])
        mixed = dict(averages)
        for d in sharing:
            gossip = self.peer_layer.collect(d, server_round)
            mixed[d] = gossip.model
            self.report.bytes_hubs += gossip.bytes_in
            if gossip.skipped:
                self.report.skipped_peers[d] = gossip.skipped
        return mixed

    def aggregate_train(
        self, server_round: int, replies: Any
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate every hub's replies and gossip when due; return ``u`` and the metrics.

        The second half of :meth:`run_round`, for callers that drive the phases themselves.
        """
        self.report = RoundReport(server_round, gossip=server_round % self.q == 0)
        averages = self._average(server_round, list(replies))
        self.models = self._gossip(server_round, averages) if self.report.gossip else averages
        self.log_failures()
        return self.global_model(), self.round_metrics()

    def log_failures(self) -> None:
        """Log what went wrong in the last round at any hub, in one line (if anything did)."""
        report = self.report
        if report.dropped or report.missing or report.failed_hubs:
            workers = sum(len(hub.workers) for hub in self.hubs.values())
            summary = failure_summary(
                len(report.missing), workers, report.dropped, report.failed_hubs
            )
            gossip = " and sat the gossip out" if report.gossip and report.failed_hubs else ""
            log(WARNING, "round %s: %s%s", report.server_round, summary, gossip)

    def global_model(self) -> ArrayRecord:
        """Return ``u = sum_d b_d y_d`` over this server's hubs (``y_d`` for a single hub)."""
        models = [self.models[d] for d in self.hub_ids]
        if len(models) == 1:
            return models[0]
        b = self.hierarchy.b[self.hub_ids]
        stacked, layout = stack(models)
        return unstack(weighted_average(b / b.sum(), stacked)[None, :], layout)[0]

    def round_metrics(self) -> MetricRecord:
        """Return the last round's metrics: of u (b-weighted over hubs), of every hub, per worker.

        ``worker-steps`` lists the steps of every worker by its id (0 for a
        worker without a valid reply, or of a hub this server does not run).
        """
        b = self.hierarchy.b
        metrics = round_record(self.report, b)
        steps = self.report.steps  # workers of other servers' hubs, and without a reply: 0
        metrics[WORKER_STEPS] = [int(steps.get(w, 0)) for w in range(self.num_workers)]
        if len(self.hub_ids) == self.num_hubs and self.num_hubs > 1:
            stacked, _ = stack([self.models[d] for d in self.hub_ids])
            metrics[CONSENSUS] = consensus_distance(b, stacked)
        return metrics
