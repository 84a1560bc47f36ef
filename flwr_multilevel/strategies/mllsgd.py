"""MLL-SGD as a Flower strategy: D hub strategies, their workers, and hub-to-hub gossip.

``MLLSGD(FedAvg(...), hubs=[3, 3], graph="path", tau=4, q=2)`` wraps the
strategy a Flower app already has; ``strategy.start(grid=..., initial_arrays=...,
num_rounds=..., train_config=..., evaluate_fn=...)`` then runs Multi-Level
Local SGD and returns Flower's ``Result`` with ``u = sum_d b_d y_d``.

The hubs and one round across them are :class:`~flwr_multilevel.strategies.rounds.MLLSGDRounds`;
:class:`MLLSGD` adds the run: its rounds, evaluation, checkpoints and failures.
"""

import time
from collections.abc import Callable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flwr_multilevel.errors import RunAborted
from flwr_multilevel.protocol.keys import hub_key
from flwr_multilevel.strategies.app_config import mllsgd_arguments
from flwr_multilevel.strategies.chain import strategy_chain
from flwr_multilevel.strategies.client_check import check_client_app
from flwr_multilevel.strategies.deadline import set_deadline
from flwr_multilevel.strategies.one_line import (
    ONE_LINE_ERRORS,
    fail_in_one_line,
    report_in_one_line,
)
from flwr_multilevel.strategies.report import RoundReport, combine_hubs
from flwr_multilevel.strategies.rounds import MLLSGDRounds
from flwr_multilevel.strategies.run_log import (
    log_evaluation,
    log_final,
    log_round,
    log_round_start,
    log_start,
)
from flwr_multilevel.strategies.settings import at_least


class MLLSGD(MLLSGDRounds):
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
    partial_discovery : bool (default: False)
        After ``discovery_timeout``, go on with the workers found if every hub
        has at least one and ``min_replies`` of its own (a deployment whose
        worker is gone); the others count as missing every round.
    on_round : Callable[[RoundReport, list[ArrayRecord]], bool | None] | None (default: None)
        Called after every round with its report and the hub models; True stops the run.

    Raises
    ------
    ValueError
        Any argument out of range, naming it.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAvg
    >>> strategy = MLLSGD(FedAvg(), hubs=[2, 2], tau=4, q=2, rates=[1.0, 0.5, 0.8, 0.9])
    >>> strategy.num_hubs, strategy.num_workers
    (2, 4)
    """

    @classmethod
    def from_run_config(
        cls, strategy: Strategy | None, run_config: Mapping[str, Any], **kwargs: Any
    ) -> "MLLSGD":
        """Return an MLLSGD whose settings come from a Flower app's run config.

        Reads the keys of ``default.yaml``, flattened, that set an MLLSGD
        argument (:data:`~flwr_multilevel.strategies.app_config.RUN_CONFIG_KEYS`:
        ``hubs.count``, ``hubs.workers`` (``"3,3"``), ``hubs.graph``, ``tau``,
        ``q``, ``seed``, ``rates.*``, ``weighting``, ``hub.*``...) where present,
        with default.yaml's meaning, and ignores the app's other keys;
        ``kwargs`` set the rest (or override).

        A mistake is logged as one line at once (``flwr-multilevel: error:
        <key>: ...``) and ends a ``flwr run`` without a traceback
        (:mod:`~flwr_multilevel.strategies.one_line`).

        Raises
        ------
        ConfigError
            A bad value, naming its dotted key, or a bad argument, naming it
            (a ``ValueError``).

        Examples
        --------
        >>> config = {"hubs.workers": "2,2", "tau": 4, "q": 2, "num-server-rounds": 3}
        >>> MLLSGD.from_run_config(None, config).sizes
        (2, 2)
        """
        try:
            return cls(strategy, **mllsgd_arguments(run_config, kwargs))
        except ValueError as err:
            raise fail_in_one_line(err) from None

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
                metrics[hub_key(d, key)] = value
        log_evaluation(metrics, central=False, server_round=server_round)
        return metrics

    def _central_evaluation(
        self, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None], server_round: int
    ) -> MetricRecord | None:
        """Call ``evaluate_fn`` on u (and, with ``evaluate_hubs``, on every ``y_d``)."""
        metrics = evaluate_fn(server_round, self.global_model())
        if self.evaluate_hubs and server_round > 0:
            metrics = MetricRecord(dict(metrics.items())) if metrics else MetricRecord()
            for d in self.hub_ids:
                for key, value in (evaluate_fn(server_round, self.models[d]) or {}).items():
                    metrics[hub_key(d, key)] = value
        log_evaluation(metrics, central=True, server_round=server_round)
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

        It logs as Flower's strategies do: the start, every round (the app's
        metrics, averaged with ``v_i`` and ``b_d``, under the app's own names),
        every evaluation, and the final ``Result``. A bad argument, a
        simulated ClientApp without ``multilevel_mod``
        (:mod:`~flwr_multilevel.strategies.client_check`), too few workers, or
        an aborted run is logged as one line at once
        (:mod:`~flwr_multilevel.strategies.one_line`).

        Raises
        ------
        ConfigError
            A bad ``train_config`` or ``num_rounds`` (before any message is sent).
        WorkerDiscoveryError
            The grid does not hold the expected workers, or a simulated
            ClientApp does not use ``multilevel_mod``.
        RunAborted
            A hub failed ``max_failed_rounds`` rounds in a row.
        """
        report_in_one_line()
        try:
            at_least("num_rounds", num_rounds, 1)
            config = self.check_train_config(train_config)
        except ValueError as err:
            raise fail_in_one_line(err) from None
        evaluate_config = ConfigRecord(dict((evaluate_config or {}).items()))
        log_start(type(self).__name__, num_rounds, initial_arrays, config, evaluate_config)
        began = time.time()
        try:
            check_client_app(grid)
            result = self._run(
                grid, initial_arrays, num_rounds, timeout, config, evaluate_config, evaluate_fn
            )
        except ONE_LINE_ERRORS as err:
            raise fail_in_one_line(err) from None
        finally:  # also when a round raises (RunAborted, Ctrl-C): the peer layer's server stops
            if self.peer_layer is not None:
                self.peer_layer.close()
        log_final(result, time.time() - began)
        return result

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
            log_round_start(server_round, num_rounds)
            report = self.run_round(grid, server_round, config, timeout)
            abort = self._count_failures(report)
            result.train_metrics_clientapp[server_round] = train = self.round_metrics()
            log_round(report, train, self.tau)
            self.log_failures()
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
            stop = self.on_round is not None and self.on_round(report, models)
            if abort:  # after on_round: the round that ends the run is recorded too
                raise RunAborted(abort)
            if stop:
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

    def _count_failures(self, report: RoundReport) -> str:
        """Count every hub's failed rounds in a row; return why the run must stop, or "".

        The run stops (:class:`RunAborted`, after the round is recorded) once a
        hub has kept its model ``max_failed_rounds`` rounds in a row.
        """
        reason = ""
        for d in self.hub_ids:
            failed = d in report.failed_hubs
            self._failed_in_a_row[d] = self._failed_in_a_row.get(d, 0) + 1 if failed else 0
            limit = self.max_failed_rounds
            if not reason and limit and self._failed_in_a_row[d] >= limit:
                reason = (
                    f"hub {d} kept its model for {self._failed_in_a_row[d]} rounds in a row "
                    f"(round {report.server_round}); last reason: {report.failed_hubs[d]}"
                )
        return reason
