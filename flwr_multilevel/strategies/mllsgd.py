"""MLL-SGD as a Flower strategy: D hub strategies, their workers, and hub-to-hub gossip.

``MLLSGD(FedAvg(...), hubs=[3, 3], graph="path", tau=4, q=2)`` wraps the
strategy a Flower app already has; ``strategy.start(grid=..., initial_arrays=...,
num_rounds=..., train_config=..., evaluate_fn=...)`` then runs Multi-Level
Local SGD and returns Flower's ``Result`` with ``u = sum_d b_d y_d``.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any, cast

import networkx as nx
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result, Strategy

from flwr_multilevel.errors import ConfigError, RunAborted
from flwr_multilevel.model.clock import round_slots
from flwr_multilevel.model.hierarchy import Hierarchy, build_hierarchy
from flwr_multilevel.model.mixing import consensus_distance, mixing_matrix, weighted_average
from flwr_multilevel.model.topology import hub_graph
from flwr_multilevel.protocol.arrays import message_bytes, stack, unstack

from .deadline import one_reply_each, set_deadline
from .discovery import discover_workers
from .hub import HubStrategy, Missing, WorkerSpec, strategy_chain
from .peer import InProcessPeerLayer, PeerLayer
from .report import OnRound, RoundReport, combine_hubs, round_record
from .settings import (
    at_least,
    hub_sizes,
    operating_rates,
    train_config,
    worker_weights,
)


class MLLSGD(Strategy):
    """Multi-Level Local SGD over D hubs, each running a Flower strategy on its workers.

    Implementation based on https://arxiv.org/abs/2007.13819 (Algorithm 1).
    Worker i is the node whose node config says ``partition-id`` (or
    ``worker-id``) i; hub 0 owns workers ``0..hubs[0]-1``, hub 1 the next
    ``hubs[1]``, and so on. Each round is tau time steps: every hub sends its
    model ``y_d`` to its workers, each worker takes a local step at each time
    step with probability ``p_i``, the hub averages their models with ``v_i``
    (``z_d``), and every q rounds the hubs mix through H: ``y_d = sum_j H[j,d] z_j``.

    Parameters
    ----------
    strategy : Strategy | None (default: FedAvg())
        What aggregates at every hub: any stock Flower strategy or chain of
        Flower wrappers. Each hub works on its own copy.
    hubs : int | Sequence[int] | str
        Workers of each hub, e.g. ``[3, 3]`` or ``"3,3"``.
    tau : int (default: 1)
        Time steps per round (between hub averages).
    q : int (default: 1)
        Rounds between hub gossips.
    graph : str | networkx.Graph (default: "path")
        Hub graph: ``complete``, ``ring``, ``path``, ``star``, ``erdos_renyi``,
        a file, or a connected networkx graph on ``0..D-1``.
    mixing : str | numpy.ndarray (default: "auto")
        H: ``auto`` (``b 1^T`` on a complete graph, Metropolis-Hastings
        otherwise), ``metropolis``, ``complete``, or a checked matrix.
    rates : float | Sequence[float] (default: 1.0)
        Operating rate ``p_i`` of every worker, or one per worker.
    weights : str | Sequence[float] (default: "num-examples")
        ``w_i``: ``"num-examples"`` (each worker's first valid reply fixes it),
        ``"equal"``, or one positive number per worker.
    seed : int (default: 0)
        Seeds every Bernoulli draw (via ``train_config["seed"]`` unless set there).
    missing : str (default: "stay")
        A worker without a valid reply takes no step (``"stay"``, the paper's
        model) or is left out and the others renormalised (``"renormalize"``).
    clip_norm : float | None (default: None)
        Each hub clips every worker's update ``x_i - y_d`` to this L2 norm.
    min_replies : float (default: 0.0)
        Fraction of a hub's workers that must reply validly, or the hub keeps
        its model for the round (and counts a failed round).
    evaluate_every : int (default: 1)
        Rounds between federated evaluations of u (0: never).
    evaluate_hubs : bool (default: False)
        Also evaluate every hub model ``y_d`` (federated and with ``evaluate_fn``).
    wait_for_slowest : bool (default: False)
        The synchronous baseline: every worker takes exactly tau steps (rate 1)
        and the virtual clock charges the slowest worker's time.
    peer_layer : PeerLayer | None (default: None)
        Hub-to-hub gossip; defaults to :class:`InProcessPeerLayer` over H.
    hub_ids : Sequence[int] | None (default: None)
        The hubs this server runs (all by default). A deployment runs one hub
        per server, with a networked ``peer_layer``.
    max_failed_rounds : int (default: 5)
        Stop the run (:class:`RunAborted`) when a hub has kept its model this
        many rounds in a row because no reply was valid or its strategy
        failed; 0 never stops.
    discovery_timeout : float (default: 60)
        Seconds to wait for every worker to be connected and identified.
    on_round : Callable[[RoundReport, list[ArrayRecord]], bool | None] | None (default: None)
        Called after every round with its report and the hub models; True stops the run.

    Raises
    ------
    ValueError
        Any argument out of range, naming it.

    Examples
    --------
    >>> strategy = MLLSGD(FedAvg(), hubs=[2, 2], tau=4, q=2, rates=[1.0, 0.5, 0.8, 0.9])
    >>> strategy.num_hubs, strategy.num_workers
    (2, 4)
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
        weights: str | Sequence[float] = "num-examples",
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
        on_round: OnRound | None = None,
    ) -> None:
        self.strategy = strategy if strategy is not None else FedAvg()
        if not isinstance(self.strategy, Strategy):
            raise ValueError(f"strategy: expected a Flower Strategy, got {type(strategy).__name__}")
        self.sizes = hub_sizes(hubs)
        self.tau, self.q = at_least("tau", tau, 1), at_least("q", q, 1)
        self.seed = at_least("seed", seed, 0)
        self.rates = operating_rates(rates, self.num_workers)
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
        self.on_round = on_round
        self.hubs: dict[int, HubStrategy] = {}
        self.hub_of_node: dict[int, int] = {}
        self.models: dict[int, ArrayRecord] = {}
        self.report = RoundReport(0, gossip=False)
        self._restored: Mapping[str, Any] | None = None
        if all(w is not None for w in self._weights):
            self._fix_mixing()  # errors in the graph or H show now, not after round 1

    @classmethod
    def from_run_config(
        cls, strategy: Strategy | None, run_config: Mapping[str, Any], **kwargs: Any
    ) -> "MLLSGD":
        """Return an MLLSGD whose settings come from a Flower app's run config.

        Reads ``hubs`` (``"3,3"``), ``tau``, ``q``, ``hub-graph``, ``rates``
        (one number, or one per worker as ``"1,0.5,..."``) and ``seed`` where
        present; ``kwargs`` set the rest (or override).

        Examples
        --------
        >>> MLLSGD.from_run_config(None, {"hubs": "2,2", "tau": 4, "q": 2}).tau
        4
        """
        settings: dict[str, Any] = {}
        for key, name in (
            ("hubs", "hubs"),
            ("tau", "tau"),
            ("q", "q"),
            ("hub-graph", "graph"),
            ("seed", "seed"),
        ):
            if key in run_config:
                settings[name] = run_config[key]
        if "rates" in run_config:
            value = run_config["rates"]
            settings["rates"] = (
                [float(v) for v in value.split(",")] if isinstance(value, str) else value
            )
        return cls(strategy, **{**settings, **kwargs})

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

    def summary(self) -> None:
        """Log the network and every hub's strategy."""
        log(
            INFO,
            "\t├──> MLL-SGD: %s hubs %s, tau=%s, q=%s, graph with %s edges, rates %s..%s",
            self.num_hubs,
            list(self.sizes),
            self.tau,
            self.q,
            self.graph.number_of_edges(),
            round(float(self.rates.min()), 3),
            round(float(self.rates.max()), 3),
        )
        for hub in self.hubs.values():
            hub.summary()

    def setup(self, grid: Grid, initial_arrays: ArrayRecord) -> None:
        """Find the workers on ``grid`` and build the hubs, all starting from ``x_1``."""
        worker_ids = [w for d in self.hub_ids for w in self._members(d)]
        node_of = discover_workers(grid, worker_ids, self.discovery_timeout)
        self.hubs, self.hub_of_node = {}, {}
        for d in self.hub_ids:
            workers = {
                node_of[w]: WorkerSpec(
                    w, self._weights[w], 1.0 if self.wait_for_slowest else float(self.rates[w])
                )
                for w in self._members(d)
            }
            self.hubs[d] = HubStrategy(
                self.strategy, d, workers, self.tau, self.missing, self.clip_norm, self.min_replies
            )
            self.hub_of_node.update({node: d for node in workers})
        self.models = {d: initial_arrays for d in self.hub_ids}

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
            A key the hubs set per worker (``RESERVED``), a ``time-steps``
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
            int(cast(int, config["seed"])),
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
        for d in averages:
            if d not in sharing:
                log(
                    WARNING,
                    "round %s: hub %s sits this gossip out (%s)",
                    server_round,
                    d,
                    self.report.failed_hubs[d],
                )
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
        return self.global_model(), self.round_metrics()

    def global_model(self) -> ArrayRecord:
        """Return ``u = sum_d b_d y_d`` over this server's hubs (``y_d`` for a single hub)."""
        models = [self.models[d] for d in self.hub_ids]
        if len(models) == 1:
            return models[0]
        b = self.hierarchy.b[self.hub_ids]
        stacked, layout = stack(models)
        return unstack(weighted_average(b / b.sum(), stacked)[None, :], layout)[0]

    def round_metrics(self) -> MetricRecord:
        """Return the last round's metrics: of u (b-weighted over hubs) and of every hub."""
        b = self.hierarchy.b
        metrics = round_record(self.report, b)
        if len(self.hub_ids) == self.num_hubs and self.num_hubs > 1:
            stacked, _ = stack([self.models[d] for d in self.hub_ids])
            metrics["consensus"] = consensus_distance(b, stacked)
        return metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Return federated-evaluation messages of ``arrays`` for every hub's workers."""
        return [
            message
            for hub in self.hubs.values()
            for message in hub.configure_evaluate(server_round, arrays, config, grid)
        ]

    def aggregate_evaluate(self, server_round: int, replies: Any) -> MetricRecord | None:
        """Average the evaluation metrics of every hub, then across hubs with ``b_d``."""
        routed: dict[int, list[Message]] = {d: [] for d in self.hubs}
        for reply in replies:
            if (hub_id := self.hub_of_node.get(reply.metadata.src_node_id)) is not None:
                routed[hub_id].append(reply)
        per_hub = {d: self.hubs[d].aggregate_evaluate(server_round, routed[d]) for d in self.hubs}
        present = {d: m for d, m in per_hub.items() if m}
        return combine_hubs(present, self.hierarchy.b) if present else None

    def _federated_evaluation(
        self, grid: Grid, server_round: int, config: ConfigRecord, timeout: float
    ) -> MetricRecord | None:
        """Evaluate u (and, with ``evaluate_hubs``, every ``y_d``) on the workers' own data."""
        u = self.global_model()
        messages = self.configure_evaluate(server_round, u, config, grid)
        if not messages:
            return None
        metrics = self.aggregate_evaluate(
            server_round, grid.send_and_receive(set_deadline(messages, timeout), timeout=timeout)
        )
        metrics = metrics if metrics is not None else MetricRecord()
        for d, hub in self.hubs.items() if self.evaluate_hubs else ():
            sent = set_deadline(
                hub.configure_evaluate(server_round, self.models[d], config, grid), timeout
            )
            hub_metrics = hub.aggregate_evaluate(
                server_round, grid.send_and_receive(sent, timeout=timeout)
            )
            for key, value in (hub_metrics or {}).items():
                metrics[f"hub{d}-{key}"] = value
        return metrics

    def _central_evaluation(
        self, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None], server_round: int
    ) -> MetricRecord | None:
        """Call ``evaluate_fn`` on u (and, with ``evaluate_hubs``, on every ``y_d``)."""
        metrics = evaluate_fn(server_round, self.global_model())
        if not self.evaluate_hubs or server_round == 0:
            return metrics
        metrics = MetricRecord(dict(metrics.items())) if metrics else MetricRecord()
        for d in self.hub_ids:
            for key, value in (evaluate_fn(server_round, self.models[d]) or {}).items():
                metrics[f"hub{d}-{key}"] = value
        return metrics

    # pylint: disable=too-many-arguments
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` rounds of MLL-SGD (``num_rounds * tau`` time steps).

        Flower's ``Strategy.start`` contract: the same arguments, and a
        ``Result`` whose ``arrays`` is ``u = sum_d b_d y_d`` and whose metrics
        per round hold u's (b-weighted) and every hub's (``hub<d>-<key>``).

        Raises
        ------
        ValueError
            A bad ``train_config`` or ``num_rounds`` (before any message is sent).
        WorkerDiscoveryError
            The grid does not hold the expected workers.
        """
        at_least("num_rounds", num_rounds, 1)
        config = self.check_train_config(train_config)
        evaluate_config = ConfigRecord(dict((evaluate_config or {}).items()))
        log(INFO, "Starting MLLSGD strategy:")
        try:
            return self._run(
                grid, initial_arrays, num_rounds, timeout, config, evaluate_config, evaluate_fn
            )
        finally:  # also when a round raises (RunAborted, Ctrl-C): the peer layer's server stops
            if self.peer_layer is not None:
                self.peer_layer.close()

    # pylint: disable=too-many-arguments
    def _run(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        timeout: float,
        config: ConfigRecord,
        evaluate_config: ConfigRecord,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
    ) -> Result:
        """Run the rounds of :meth:`start`, after its checks; return its ``Result``."""
        self.setup(grid, initial_arrays)
        first_round = self._apply_restored() + 1
        self.summary()
        result = Result()
        if first_round > 1:
            log(INFO, "MLLSGD: resuming after round %s", first_round - 1)
        elif evaluate_fn is not None and (metrics := self._central_evaluation(evaluate_fn, 0)):
            result.evaluate_metrics_serverapp[0] = metrics
        for server_round in range(first_round, num_rounds + 1):
            report = self.run_round(grid, server_round, config, timeout)
            self._check_failures(report)
            result.train_metrics_clientapp[server_round] = train = self.round_metrics()
            self._log_round(report, train, num_rounds)
            if self.evaluate_every and (
                server_round % self.evaluate_every == 0 or server_round == num_rounds
            ):
                if metrics := self._federated_evaluation(
                    grid, server_round, evaluate_config, timeout
                ):
                    result.evaluate_metrics_clientapp[server_round] = metrics
            if evaluate_fn is not None and (
                metrics := self._central_evaluation(evaluate_fn, server_round)
            ):
                result.evaluate_metrics_serverapp[server_round] = metrics
            models = [self.models[d] for d in self.hub_ids]
            if self.on_round is not None and self.on_round(report, models):
                log(INFO, "MLLSGD: stopped after round %s", server_round)
                break
        result.arrays = self.global_model()
        return result

    def state_dict(self) -> dict[str, Any]:
        """Return what a checkpoint needs to continue the run after the last round.

        The hub models, every hub strategy (with its state: FedAdam/FedYogi
        moments, FedAvgM momentum, DP accountants), the weights fixed from the
        workers' replies and the failure counters. Every random draw depends on
        ``(seed, round, worker)`` only, so nothing else is needed.
        """
        return {
            "round": self.report.server_round,
            "models": {d: {k: a.numpy() for k, a in m.items()} for d, m in self.models.items()},
            "strategies": {d: hub.strategy for d, hub in self.hubs.items()},
            "weights": {
                d: {s.worker_id: s.weight for s in hub.workers.values()}
                for d, hub in self.hubs.items()
            },
            "failed_in_a_row": dict(self._failed_in_a_row),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (:meth:`state_dict`) at the next :meth:`start`."""
        self._restored = state

    def _apply_restored(self) -> int:
        """Apply a restored state after :meth:`setup`; return the last round it finished (0)."""
        state = self._restored
        if state is None:
            return 0
        if sorted(state["models"]) != sorted(self.hubs):
            raise ValueError(f"restore: the checkpoint holds hubs {sorted(state['models'])}")
        for d, hub in self.hubs.items():
            self.models[d] = ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in state["models"][d].items()}
            )
            hub.strategy = state["strategies"][d]
            hub.aggregator = strategy_chain(hub.strategy)[-1]
            for spec in hub.workers.values():
                spec.weight = state["weights"][d][spec.worker_id]
        self._failed_in_a_row = dict(state["failed_in_a_row"])
        self.report = RoundReport(int(state["round"]), gossip=False)
        self._restored = None
        return int(state["round"])

    def _check_failures(self, report: RoundReport) -> None:
        """Raise :class:`RunAborted` once a hub has failed ``max_failed_rounds`` rounds in a row."""
        for d in self.hub_ids:
            failed = d in report.failed_hubs
            self._failed_in_a_row[d] = self._failed_in_a_row.get(d, 0) + 1 if failed else 0
            if self.max_failed_rounds and self._failed_in_a_row[d] >= self.max_failed_rounds:
                raise RunAborted(
                    f"hub {d} kept its model for {self._failed_in_a_row[d]} rounds in a row "
                    f"(round {report.server_round}); last reason: {report.failed_hubs[d]}"
                )

    def _log_round(self, report: RoundReport, metrics: MetricRecord, num_rounds: int) -> None:
        log(
            INFO,
            "[ROUND %s/%s] steps %s%s%s, %.2f s",
            report.server_round,
            num_rounds,
            metrics["steps"],
            ", gossip" if report.gossip else "",
            f", train-loss {metrics['train-loss']:.4f}" if "train-loss" in metrics else "",
            report.seconds,
        )
        if report.dropped or report.missing:
            log(
                WARNING,
                "round %s: %s replies not used, %s workers counted as taking no step",
                report.server_round,
                len(report.dropped),
                len(report.missing),
            )
