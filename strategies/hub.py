"""Run any stock Flower strategy at one MLL-SGD hub.

:class:`HubStrategy` wraps a strategy the way Flower's differential-privacy
wrappers do: sampling is restricted to the hub's workers through a
:class:`SubGrid`, every message gains the worker's own MLL-SGD instructions,
replies are checked before they can be averaged, and aggregation is weighted by
the paper's ``v_i``.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvgM, Strategy

WEIGHT_KEY = "worker-weight"
REQUIRED_METRICS = ("num-examples", "steps", "train-loss")


class SubGrid(Grid):
    """View of a Grid restricted to one hub's node IDs.

    Stock strategies sample only through ``grid.get_node_ids()``, so handing
    them this view keeps them inside the hub. Messages go through the wrapped
    grid unchanged.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = set(node_ids)

    def set_run(self, run_id: Any) -> None:
        """Set the run of the wrapped grid."""
        self._grid.set_run(run_id)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        """Run of the wrapped grid."""
        return self._grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        """Delegate (deprecated in Flower)."""
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Return the connected node IDs of this hub."""
        return [n for n in self._grid.get_node_ids() if n in self._ids]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push messages through the wrapped grid."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull messages through the wrapped grid."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send and receive through the wrapped grid."""
        return self._grid.send_and_receive(messages, timeout=timeout)


@dataclass(frozen=True)
class WorkerSpec:
    """What a hub knows of one of its workers.

    Attributes
    ----------
    worker_id : int
        Global worker index (its data partition).
    weight : float
        ``w_i`` (1, or its local data size); the hub averages with
        ``v_i = w_i / sum_hub w_j``.
    rate : float
        Operating rate ``p_i``.
    """

    worker_id: int
    weight: float
    rate: float


@dataclass
class HubRoundReport:
    """What happened at a hub in its last round."""

    steps: dict[int, int] = field(default_factory=dict)  # worker id -> steps taken
    dropped: list[str] = field(default_factory=list)  # one reason per dropped reply
    metrics: MetricRecord | None = None


def check_reply(
    reply: Message, expected: Mapping[str, tuple[tuple[int, ...], str]], max_steps: int
) -> str | None:
    """Return why a worker's reply must not be averaged, or None if it may.

    Parameters
    ----------
    reply : Message
        The worker's reply to a train message.
    expected : Mapping[str, tuple[tuple[int, ...], str]]
        Array key -> (shape, dtype) of the model the hub sent.
    max_steps : int
        Most gradient steps a worker can take in a round (tau).

    Returns
    -------
    str | None
        A one-line reason, or None for a valid reply.
    """
    if reply.has_error():
        return f"the worker failed: {reply.error.reason}"
    content = reply.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "expected exactly one ArrayRecord and one MetricRecord"
    arrays = next(iter(content.array_records.values()))
    if set(arrays.keys()) != set(expected):
        return f"expected arrays {sorted(expected)}, got {sorted(arrays.keys())}"
    for key, (shape, dtype) in expected.items():
        array = arrays[key]
        if tuple(array.shape) != shape or array.dtype != dtype:
            return (
                f"array '{key}': expected shape {shape} ({dtype}), "
                f"got {tuple(array.shape)} ({array.dtype})"
            )
        if not np.all(np.isfinite(array.numpy())):
            return f"array '{key}' holds NaN or Inf"
    metrics = next(iter(content.metric_records.values()))
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        return f"missing metrics {missing}"
    for key in REQUIRED_METRICS:
        value = metrics[key]
        if isinstance(value, list) or not math.isfinite(value):
            return f"metric '{key}' is not a finite number: {value!r}"
    steps = float(metrics["steps"])  # type: ignore[arg-type]  # checked above
    if steps != int(steps) or not 0 <= steps <= max_steps:
        return f"metric 'steps': expected an integer in [0, {max_steps}], got {steps!r}"
    return None


class HubStrategy(Strategy):
    """One MLL-SGD hub: a stock Flower strategy restricted to the hub's workers.

    Implementation based on https://arxiv.org/abs/2007.13819 (Algorithm 1,
    lines 4-10 and 14).

    Parameters
    ----------
    strategy : Strategy
        The strategy that aggregates at this hub (FedAvg, FedProx, FedAdam,
        FedYogi, FedAvgM, ...). Give every hub its own instance: adaptive
        strategies keep state. Its ``weighted_by_key`` is set to
        ``"worker-weight"`` and its minimum node counts to the hub's size.
    hub_id : int
        Index of the hub.
    workers : Mapping[int, WorkerSpec]
        Node ID -> the worker on that node.
    time_steps : int
        tau: time steps per round, the most steps a worker can report.
    """

    def __init__(
        self,
        strategy: Strategy,
        hub_id: int,
        workers: Mapping[int, WorkerSpec],
        time_steps: int,
    ) -> None:
        self.strategy = strategy
        self.hub_id = hub_id
        self.workers = dict(workers)
        self.time_steps = time_steps
        self.report = HubRoundReport()
        self._expected: dict[str, tuple[tuple[int, ...], str]] = {}
        # Stock defaults (2 nodes) would wait forever at a hub of one worker
        size = len(self.workers)
        if hasattr(strategy, "min_train_nodes"):
            strategy.min_train_nodes = min(strategy.min_train_nodes, size)
        if hasattr(strategy, "min_available_nodes"):
            strategy.min_available_nodes = size
        if hasattr(strategy, "weighted_by_key"):
            strategy.weighted_by_key = WEIGHT_KEY

    @property
    def _configrecord_key(self) -> str:
        return str(getattr(self.strategy, "configrecord_key", "config"))

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(
            INFO,
            "\t├──> Hub %s: %s over %s workers",
            self.hub_id,
            type(self.strategy).__name__,
            len(self.workers),
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the next round of training at this hub's workers."""
        # FedAvgM keeps the model it sent last; after gossip the hub model moved
        if isinstance(self.strategy, FedAvgM):
            self.strategy.current_arrays = arrays
        self._expected = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}
        messages = self.strategy.configure_train(
            server_round, arrays, config, SubGrid(grid, self.workers)
        )
        return [self._instruct(msg) for msg in messages]

    def _instruct(self, msg: Message) -> Message:
        """Add the worker's own MLL-SGD instructions to a message."""
        worker = self.workers[msg.metadata.dst_node_id]
        content = RecordDict(dict(msg.content.items()))
        config = ConfigRecord(dict(content.config_records[self._configrecord_key].items()))
        config["worker-id"] = worker.worker_id
        config["hub-id"] = self.hub_id
        config["operating-rate"] = worker.rate
        content[self._configrecord_key] = config
        return Message(
            content,
            dst_node_id=msg.metadata.dst_node_id,
            message_type=msg.metadata.message_type,
            group_id=msg.metadata.group_id,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Drop invalid replies, weight the rest by ``v_i`` and aggregate."""
        self.report = HubRoundReport()
        accepted = []
        for reply in replies:
            node = reply.metadata.src_node_id
            worker = self.workers.get(node)
            reason = (
                f"node {node} is not a worker of this hub"
                if worker is None
                else check_reply(reply, self._expected, self.time_steps)
            )
            if reason is not None:
                who = f"worker {worker.worker_id}" if worker else f"node {node}"
                log(
                    WARNING,
                    "hub %s round %s: dropped the reply of %s: %s",
                    self.hub_id,
                    server_round,
                    who,
                    reason,
                )
                self.report.dropped.append(f"{who}: {reason}")
                continue
            assert worker is not None
            metrics = next(iter(reply.content.metric_records.values()))
            self.report.steps[worker.worker_id] = int(metrics["steps"])  # type: ignore[arg-type]
            accepted.append(self._weighted(reply, worker.weight))
        if not accepted:
            log(
                WARNING,
                "hub %s round %s: no valid reply, the hub keeps its model",
                self.hub_id,
                server_round,
            )
            return None, None
        arrays, self.report.metrics = self.strategy.aggregate_train(server_round, accepted)
        if arrays is not None:
            arrays = self._as_sent(arrays)
        return arrays, self.report.metrics

    def _as_sent(self, arrays: ArrayRecord) -> ArrayRecord:
        """Return ``arrays`` in the dtypes of the model the hub sent.

        Adaptive strategies (FedAdam, FedYogi, FedAdagrad) compute their update
        in float64; the hub model keeps the model's own dtypes, so workers,
        gossip and byte counts see the same arrays every round.
        """
        if all(arrays[k].dtype == dtype for k, (_, dtype) in self._expected.items()):
            return arrays
        cast = {}
        for key, (_, dtype) in self._expected.items():
            values = arrays[key].numpy()
            if np.issubdtype(np.dtype(dtype), np.integer):
                values = np.rint(values)
            cast[key] = Array(np.ascontiguousarray(values.astype(dtype)))
        return ArrayRecord(cast)

    @staticmethod
    def _weighted(reply: Message, weight: float) -> Message:
        """Put the hub's own weight ``w_i`` under ``worker-weight`` in the reply.

        The hub, not the worker, owns the weights: whatever a worker reports,
        it is averaged with ``v_i``. The reply gets a new RecordDict; the
        records it held are not modified.
        """
        content = RecordDict()
        for key, record in reply.content.items():
            if isinstance(record, MetricRecord):
                record = MetricRecord({**dict(record.items()), WEIGHT_KEY: float(weight)})
            content[key] = record
        reply.content = content
        return reply

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure federated evaluation at this hub's workers."""
        return self.strategy.configure_evaluate(
            server_round, arrays, config, SubGrid(grid, self.workers)
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate federated evaluation replies."""
        return self.strategy.aggregate_evaluate(server_round, replies)
