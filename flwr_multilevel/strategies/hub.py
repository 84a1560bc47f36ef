"""Run any stock Flower strategy, or chain of Flower wrappers, at one MLL-SGD hub.

:class:`HubStrategy` wraps a strategy the way Flower's differential-privacy
wrappers do, without changing it or the caller's messages: it works on its own
copy of the chain, samples only the hub's workers through a :class:`SubGrid`,
gives every worker its own MLL-SGD instructions, checks every reply before the
chain sees it, and makes the chain average with the paper's ``v_i``.
"""

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any, Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvgM,
    FedMedian,
    FedTrimmedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    Krum,
    Strategy,
)

from flwr_multilevel import flower_compat
from flwr_multilevel.protocol.codec import DecodedArray, array_record, decode, encode

from .hub_average import fedavg_arrays, is_plain_fedavg
from .replies import REQUIRED_METRICS, decode_reply, finite_number, short
from .replies import check_reply as check_reply  # re-exported

WEIGHT_KEY = "worker-weight"
UNWEIGHTED = (FedMedian, FedTrimmedAvg, Krum, Bulyan)  # robust rules that ignore weights
MIN_NODE_ATTRS = ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes")
Missing = Literal["stay", "renormalize"]


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


@dataclass
class WorkerSpec:
    """What a hub knows of one of its workers.

    Attributes
    ----------
    worker_id : int
        Global worker index (its data partition).
    weight : float | None
        ``w_i`` (1, or its local data size); the hub averages with
        ``v_i = w_i / sum_hub w_j``. None: taken from the worker's first valid
        reply (its ``num-examples``) and fixed from then on.
    rate : float
        Operating rate ``p_i``.
    """

    worker_id: int
    weight: float | None
    rate: float


@dataclass
class HubRoundReport:
    """What happened at a hub in its last round."""

    steps: dict[int, int] = field(default_factory=dict)  # worker id -> steps taken
    dropped: list[str] = field(default_factory=list)  # one reason per unusable reply
    missing: list[int] = field(default_factory=list)  # workers without a valid reply
    metrics: MetricRecord | None = None
    failed: bool = False  # no valid reply, or aggregation failed: the hub kept its model
    error: str = ""  # why the aggregation failed, if it did


def common_numeric_keys(records: list[MetricRecord]) -> list[str]:
    """Return the metric keys every record holds as a finite number (the weight key aside).

    Examples
    --------
    >>> common_numeric_keys([MetricRecord({"a": 1.0, "b": 2}), MetricRecord({"a": 3.0})])
    ['a']
    """
    keys = set.intersection(*(set(r.keys()) for r in records)) - {WEIGHT_KEY}
    return sorted(k for k in keys if all(finite_number(r, k) is not None for r in records))


def weighted_metrics(records: list[MetricRecord], weights: list[float]) -> MetricRecord:
    """Return the weighted average of every metric that all records hold as a finite number.

    The same sums, in the same order, as Flower's ``aggregate_metricrecords``.

    Examples
    --------
    >>> a = MetricRecord({"loss": 1.0, "acc": 0.5})
    >>> b = MetricRecord({"loss": 3.0, "note": [1, 2]})
    >>> dict(weighted_metrics([a, b], [1.0, 3.0]))
    {'loss': 2.5}
    """
    keys = common_numeric_keys(records)
    weights = [float(w) for w in weights]
    total = sum(weights)
    factors = [w / total for w in weights]
    sums: dict[str, float] = {}
    for record, factor in zip(records, factors, strict=True):
        for key in keys:
            value = record[key]
            sums[key] = value * factor if key not in sums else sums[key] + value * factor  # type: ignore[operator]
    return MetricRecord(sums)  # type: ignore[arg-type]


def clip_update(reply: Message, model: ArrayRecord, clip_norm: float) -> Message:
    """Return ``reply`` with its update ``x_i - y_d`` clipped to L2 norm ``clip_norm``.

    The reply itself is not modified; an update within the norm is returned as is.
    The norm is computed in float64, so float32 extremes (3e38) cannot overflow it.
    """
    arrays = next(iter(reply.content.array_records.values()))
    clipped = clip_arrays(arrays, model, clip_norm)
    if clipped is arrays:
        return reply
    content = RecordDict(dict(reply.content.items()))
    content[next(iter(reply.content.array_records))] = clipped
    return Message(metadata=reply.metadata, content=content)  # type: ignore[call-overload]


def clip_arrays(arrays: ArrayRecord, model: ArrayRecord, clip_norm: float) -> ArrayRecord:
    """Return ``arrays`` with the update ``arrays - model`` clipped to L2 norm ``clip_norm``.

    ``arrays`` itself is returned when its update is within the norm (see :func:`clip_update`).
    """
    own = {k: model[k].numpy().astype(np.float64) for k in model.keys()}
    update = {k: arrays[k].numpy().astype(np.float64) - own[k] for k in own}
    norm = float(np.sqrt(sum(float(np.sum(u * u)) for u in update.values())))
    if norm <= clip_norm:
        return arrays
    scale = clip_norm / norm
    return ArrayRecord(
        {
            k: Array(np.ascontiguousarray((own[k] + scale * update[k]).astype(model[k].dtype)))
            for k in own
        }
    )


def with_entries(config: ConfigRecord, entries: Mapping[str, Any]) -> ConfigRecord:
    """Return a copy of ``config`` with ``entries`` set (only they are type-checked again).

    The entries of ``config`` passed Flower's checks when they were set, so the
    copy takes them as they are instead of checking every one per worker.

    Examples
    --------
    >>> dict(with_entries(ConfigRecord({"lr": 0.1}), {"worker-id": 3}))
    {'lr': 0.1, 'worker-id': 3}
    """
    return flower_compat.config_with_entries(config, entries)


def strategy_chain(strategy: Strategy) -> list[Strategy]:
    """Return ``strategy`` and every strategy it wraps, outermost first.

    Flower's wrappers (the differential-privacy ones) keep the wrapped
    strategy in ``.strategy``.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAvg
    >>> from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping as DP
    >>> [type(s).__name__ for s in strategy_chain(DP(FedAvg(), 0.0, 1.0, 2))]
    ['DifferentialPrivacyServerSideFixedClipping', 'FedAvg']
    """
    chain = [strategy]
    while isinstance(inner := getattr(chain[-1], "strategy", None), Strategy):
        chain.append(inner)
    return chain


class HubStrategy(Strategy):
    """One MLL-SGD hub: a Flower strategy (chain) restricted to the hub's workers.

    Implementation based on https://arxiv.org/abs/2007.13819 (Algorithm 1,
    lines 4-10 and 14).

    Parameters
    ----------
    strategy : Strategy
        The strategy that aggregates at this hub (FedAvg, FedProx, FedAdam,
        FedYogi, FedAvgM, FedMedian, ..., or a chain of Flower wrappers around
        one). It is copied: the caller's object is never changed. In the copy,
        the aggregating strategy at the end of the chain weights by
        ``"worker-weight"`` and every node minimum is capped at the hub's size.
    hub_id : int
        Index of the hub.
    workers : Mapping[int, WorkerSpec]
        Node ID -> the worker on that node.
    time_steps : int
        tau: time steps per round, the most steps a worker can report.
    missing : str (default: "stay")
        A worker without a valid reply: ``"stay"`` counts it as a worker that
        took no step (``x_i = y_d``, weight ``v_i``), as the paper's model has
        it; ``"renormalize"`` leaves it out and renormalises the others.
    clip_norm : float | None (default: None)
        Clip every worker's update ``x_i - y_d`` to this L2 norm before the
        chain sees it, which bounds what one poisoned reply can do.
    min_replies : float (default: 0.0)
        Fraction of the hub's workers whose replies must be valid; below it
        the hub keeps its model for the round.

    Raises
    ------
    ValueError
        The end of the chain cannot weight its average (no ``weighted_by_key``),
        or it does not average arrays (the XGBoost strategies).
    """

    def __init__(
        self,
        strategy: Strategy,
        hub_id: int,
        workers: Mapping[int, WorkerSpec],
        time_steps: int,
        missing: Missing = "stay",
        clip_norm: float | None = None,
        min_replies: float = 0.0,
    ) -> None:
        if missing not in ("stay", "renormalize"):
            raise ValueError(f"missing: expected 'stay' or 'renormalize', got {missing!r}")
        if clip_norm is not None and not (np.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm: expected a number > 0, got {clip_norm!r}")
        if not 0.0 <= min_replies <= 1.0:
            raise ValueError(f"min_replies: expected a fraction in [0, 1], got {min_replies!r}")
        self.clip_norm, self.min_replies = clip_norm, float(min_replies)
        self.strategy = copy.deepcopy(strategy)
        self.hub_id = hub_id
        self.workers = {int(node): copy.copy(spec) for node, spec in workers.items()}
        self.time_steps = time_steps
        self.missing = missing
        self.report = HubRoundReport()
        self._expected: dict[str, tuple[tuple[int, ...], str]] = {}
        self._model: ArrayRecord | None = None
        chain = strategy_chain(self.strategy)
        self.aggregator = chain[-1]
        if isinstance(self.aggregator, (FedXgbBagging, FedXgbCyclic)):
            raise ValueError(
                f"HubStrategy: {type(self.aggregator).__name__} combines XGBoost trees; "
                "MLL-SGD's hubs average model arrays (use FedAvg or another averaging strategy)"
            )
        if not hasattr(self.aggregator, "weighted_by_key"):
            raise ValueError(
                f"HubStrategy: {type(self.aggregator).__name__} has no weighted_by_key, so it "
                "cannot average with the hub's weights v_i; wrap a FedAvg-based strategy"
            )
        self.aggregator.weighted_by_key = WEIGHT_KEY  # type: ignore[attr-defined]
        for member in chain:  # stock minimums (2 nodes) would wait forever at a small hub
            for attr in MIN_NODE_ATTRS:
                if isinstance(getattr(member, attr, None), int):
                    setattr(member, attr, min(getattr(member, attr), len(self.workers)))
        self._keys = (
            str(getattr(self.aggregator, "arrayrecord_key", "arrays")),
            str(getattr(self.aggregator, "configrecord_key", "config")),
        )

    @property
    def weighted(self) -> bool:
        """Whether the aggregation rule uses the weights ``v_i`` (robust rules do not)."""
        return not isinstance(self.aggregator, UNWEIGHTED)

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(
            INFO,
            "\t├──> Hub %s: %s over %s workers%s",
            self.hub_id,
            " -> ".join(type(s).__name__ for s in strategy_chain(self.strategy)),
            len(self.workers),
            "" if self.weighted else " (its rule ignores the weights v_i)",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the next round of training at this hub's workers."""
        for member in strategy_chain(self.strategy):
            if isinstance(member, FedAvgM):  # it caches the model it sent; gossip moved it
                member.current_arrays = arrays
        self._model = arrays
        self._expected = {k: (tuple(a.shape), a.dtype) for k, a in arrays.items()}
        messages = self.strategy.configure_train(
            server_round, arrays, ConfigRecord(dict(config.items())), SubGrid(grid, self.workers)
        )
        return [self._instruct(msg) for msg in messages]

    def _instruct(self, msg: Message) -> Message:
        """Return ``msg`` (just made by the strategy) carrying the worker's own instructions.

        The strategy's messages share one content; each gets its own copy with
        its own config, and keeps the strategy's metadata.
        """
        worker = self.workers[msg.metadata.dst_node_id]
        content = RecordDict(dict(msg.content.items()))
        name = self._keys[1]
        if not isinstance(config := content.get(name), ConfigRecord):
            raise KeyError(name)
        content[name] = with_entries(
            config,
            {"worker-id": worker.worker_id, "hub-id": self.hub_id, "operating-rate": worker.rate},
        )
        msg.content = content
        return msg

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check the replies, weight them by ``v_i`` and aggregate through the chain.

        Returns ``(None, None)`` when the hub keeps its model this round (no
        valid reply, or the chain failed or produced non-finite values); the
        reason is logged and kept in :attr:`report`.
        """
        self.report = report = HubRoundReport()
        valid: dict[int, tuple[Message, MetricRecord]] = {}
        decoded: dict[int, ArrayRecord] = {}  # checked arrays, decoded once for the chain
        for reply in replies:
            node = reply.metadata.src_node_id
            worker = self.workers.get(node)
            if worker is None:
                self._drop(server_round, f"node {node}", "is not a worker of this hub")
                continue
            if worker.worker_id in valid:
                self._drop(server_round, f"worker {worker.worker_id}", "replied twice")
                continue
            checked = decode_reply(reply, self._expected, self.time_steps)
            if checked.reason is not None:
                self._drop(server_round, f"worker {worker.worker_id}", checked.reason)
                continue
            assert checked.arrays is not None and checked.metrics is not None and checked.values
            valid[worker.worker_id] = (reply, checked.metrics)
            decoded[worker.worker_id] = array_record(
                (k, DecodedArray.wrap(checked.arrays[k], v)) for k, v in checked.values.items()
            )
        self._fix_weights(valid)
        by_id = {spec.worker_id: spec for spec in self.workers.values()}
        report.missing = sorted(set(by_id) - set(valid))
        report.steps = {w: int(m["steps"]) for w, (_, m) in valid.items()}  # type: ignore[arg-type]
        if len(valid) < self.min_replies * len(self.workers) or not valid:
            report.failed = True
            first = f" (first: {report.dropped[0]})" if report.dropped else ""
            report.error = f"{len(valid)} of {len(self.workers)} replies were valid{first}"
            log(
                WARNING,
                "hub %s round %s: no valid reply, the hub keeps its model",
                self.hub_id,
                server_round,
            )
            return None, None
        if self.clip_norm is not None and self._model is not None:
            decoded = {w: clip_arrays(a, self._model, self.clip_norm) for w, a in decoded.items()}
        try:
            arrays = self._aggregate(server_round, valid, decoded, by_id)
        except Exception as err:  # pylint: disable=broad-except
            arrays = None
            report.error = short(
                f"{type(self.strategy).__name__} failed: {type(err).__name__}: {err}"
            )
            log(
                WARNING,
                "hub %s round %s: %s failed, the hub keeps its model: %s",
                self.hub_id,
                server_round,
                type(self.strategy).__name__,
                short(f"{type(err).__name__}: {err}"),
            )
        if arrays is not None:
            arrays = self._as_sent(arrays)
            if not all(np.isfinite(self._values(k, a)).all() for k, a in arrays.items()):
                log(
                    WARNING,
                    "hub %s round %s: the aggregate is not finite, the hub keeps its model",
                    self.hub_id,
                    server_round,
                )
                arrays = None
                report.error = "the aggregate is not finite"
        report.failed = arrays is None
        report.metrics = self._metrics([m for _, m in valid.values()], [by_id[w] for w in valid])
        return arrays, report.metrics

    def _aggregate(
        self,
        server_round: int,
        valid: Mapping[int, tuple[Message, MetricRecord]],
        decoded: Mapping[int, ArrayRecord],
        by_id: Mapping[int, WorkerSpec],
    ) -> ArrayRecord | None:
        """Return the chain's aggregate of the valid replies (and stand-ins), in worker order."""
        model = self._model
        missing = self.report.missing if self.missing == "stay" and model is not None else []
        if is_plain_fedavg(self.strategy):  # same sums as the strategy, on decoded values
            records = dict(decoded)
            for w in missing:  # took no step: x_i = y_d, with its own weight
                records[w] = model  # type: ignore[assignment]
            average = fedavg_arrays(
                [
                    (
                        {k: self._values(k, a) for k, a in records[w].items()},
                        float(by_id[w].weight or 0.0),
                    )
                    for w in sorted(records)
                ]
            )
            return array_record((k, encode(np.asarray(v))) for k, v in average.items())
        shared = common_numeric_keys([m for _, m in valid.values()])
        inputs = {w: self._input(r, decoded[w], by_id[w], m, shared) for w, (r, m) in valid.items()}
        for w in missing:
            inputs[w] = self._stand_in(by_id[w], model, shared)  # type: ignore[arg-type]
        ordered = [inputs[w] for w in sorted(inputs)]  # a fixed order: bit-identical reruns
        arrays, _ = self.strategy.aggregate_train(server_round, ordered)
        return arrays

    def _drop(self, server_round: int, who: str, reason: str) -> None:
        log(
            WARNING,
            "hub %s round %s: dropped the reply of %s: %s",
            self.hub_id,
            server_round,
            who,
            reason,
        )
        self.report.dropped.append(f"{who}: {reason}")

    def _fix_weights(self, valid: Mapping[int, tuple[Message, MetricRecord]]) -> None:
        """Fix every unknown ``w_i`` from the worker's ``num-examples``, once."""
        for spec in self.workers.values():
            if spec.weight is None and spec.worker_id in valid:
                spec.weight = float(valid[spec.worker_id][1]["num-examples"])  # type: ignore[arg-type]
        unknown = [s for s in self.workers.values() if s.weight is None]
        known = [s.weight for s in self.workers.values() if s.weight is not None]
        if unknown and known:
            mean = float(np.mean(known))
            for spec in unknown:
                spec.weight = mean
            log(
                WARNING,
                "hub %s: workers %s never replied; their weight w_i is the hub's mean %s",
                self.hub_id,
                [s.worker_id for s in unknown],
                mean,
            )

    def _values(self, key: str, array: Array) -> np.ndarray:
        """Return the values of an array of the hub's model layout (decoded without parsing)."""
        shape, dtype = self._expected.get(key, (tuple(array.shape), array.dtype))
        return decode(array, shape, dtype)

    def _input(
        self,
        reply: Message,
        arrays: ArrayRecord,
        worker: WorkerSpec,
        metrics: MetricRecord,
        keys: list[str],
    ) -> Message:
        """Return a message for the chain: the reply's ``arrays``, its metrics ``keys``, ``w_i``.

        Every input carries the same metric keys (those all valid replies hold as
        finite numbers), so no stock strategy meets inconsistent replies.
        """
        record = MetricRecord({k: metrics[k] for k in keys})
        record[WEIGHT_KEY] = float(worker.weight or 0.0)
        content = RecordDict({self._keys[0]: arrays, "metrics": record})
        return Message(metadata=reply.metadata, content=content)  # type: ignore[call-overload]

    def _stand_in(self, worker: WorkerSpec, model: ArrayRecord, keys: list[str]) -> Message:
        """Return the input of a worker that took no step: the hub model ``y_d``, metrics 0."""
        metrics = MetricRecord({k: 0.0 for k in keys})
        metrics["num-examples"], metrics["steps"] = 0, 0
        metrics[WEIGHT_KEY] = float(worker.weight or 0.0)
        node = next(n for n, s in self.workers.items() if s is worker)
        sent = Message(RecordDict(), dst_node_id=node, message_type="train")
        return Message(RecordDict({self._keys[0]: model, "metrics": metrics}), reply_to=sent)

    def _metrics(self, records: list[MetricRecord], workers: list[WorkerSpec]) -> MetricRecord:
        """Return the train metrics: ``v_i``-weighted averages, and total steps and examples."""
        metrics = weighted_metrics(records, [float(w.weight or 1.0) for w in workers])
        for key in REQUIRED_METRICS:
            metrics[key] = int(sum(finite_number(r, key) or 0.0 for r in records))
        return metrics

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

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure federated evaluation of ``arrays`` at this hub's workers."""
        return self.strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(dict(config.items())), SubGrid(grid, self.workers)
        )

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Average the workers' evaluation metrics with ``v_i`` (failed replies are left out)."""
        del server_round
        records, weights = [], []
        for reply in replies:
            worker = self.workers.get(reply.metadata.src_node_id)
            if worker is None or reply.has_error() or len(reply.content.metric_records) != 1:
                continue
            records.append(next(iter(reply.content.metric_records.values())))
            weights.append(float(worker.weight or 1.0))
        return weighted_metrics(records, weights) if records else None
