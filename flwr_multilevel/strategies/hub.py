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
from typing import Literal

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvgM, Strategy

from flwr_multilevel.protocol.codec import DecodedArray, array_record, decode
from flwr_multilevel.protocol.keys import (
    ARRAYS,
    CONFIG,
    HUB_ID,
    NUM_EXAMPLES,
    OPERATING_RATE,
    STEPS,
    WORKER_ID,
)
from flwr_multilevel.strategies.chain import UNWEIGHTED, strategy_chain, weighting_aggregator
from flwr_multilevel.strategies.hub_average import fedavg_record, is_plain_fedavg
from flwr_multilevel.strategies.hub_metrics import (
    common_numeric_keys,
    train_metrics,
    weighted_metrics,
)
from flwr_multilevel.strategies.records import (
    as_dtypes,
    chain_input,
    clip_arrays,
    stand_in,
    with_entries,
)
from flwr_multilevel.strategies.records import clip_update as clip_update  # re-exported
from flwr_multilevel.strategies.replies import check_reply as check_reply  # re-exported
from flwr_multilevel.strategies.replies import decode_reply, short
from flwr_multilevel.strategies.report import failure_summary
from flwr_multilevel.strategies.subgrid import SubGrid

Missing = Literal["stay", "renormalize"]


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
        Node ID -> the worker on that node (a negative ID, ``absent_node``,
        for a worker that never connected: it is counted missing every round).
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

    Attributes
    ----------
    log_rounds : bool (default: True)
        Log one line per round in which replies were dropped or the hub kept
        its model (counts and the first reason). :class:`MLLSGD` turns it off
        and logs one line per round for all its hubs.

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
        self.log_rounds = True
        self._expected: dict[str, tuple[tuple[int, ...], str]] = {}
        self._model: ArrayRecord | None = None
        self.nodes = sorted(n for n in self.workers if n >= 0)  # absent workers have none
        self.aggregator = weighting_aggregator(self.strategy, len(self.nodes))
        self._keys = (
            str(getattr(self.aggregator, "arrayrecord_key", ARRAYS)),
            str(getattr(self.aggregator, "configrecord_key", CONFIG)),
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
            server_round, arrays, ConfigRecord(dict(config.items())), SubGrid(grid, self.nodes)
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
            {WORKER_ID: worker.worker_id, HUB_ID: self.hub_id, OPERATING_RATE: worker.rate},
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
        valid, decoded = self._check_replies(server_round, sorted(replies, key=self._by_worker))
        self._fix_weights(valid)
        by_id = {spec.worker_id: spec for spec in self.workers.values()}
        report.missing = sorted(set(by_id) - set(valid))
        report.steps = {w: int(m[STEPS]) for w, (_, m) in valid.items()}  # type: ignore[arg-type]
        if len(valid) < self.min_replies * len(self.workers) or not valid:
            self._keep_model(len(valid))
            self._log_round(server_round)
            return None, None
        if self.clip_norm is not None and self._model is not None:
            decoded = {w: clip_arrays(a, self._model, self.clip_norm) for w, a in decoded.items()}
        arrays = self._checked_aggregate(server_round, valid, decoded, by_id)
        report.failed = arrays is None
        report.metrics = train_metrics(
            [m for _, m in valid.values()], [float(by_id[w].weight or 1.0) for w in valid]
        )
        self._log_round(server_round)
        return arrays, report.metrics

    def _by_worker(self, reply: Message) -> tuple[int, int]:
        """Sort key of a reply: its worker, not its arrival (bit-identical reruns, same reasons)."""
        spec = self.workers.get(reply.metadata.src_node_id)
        return (0, spec.worker_id) if spec is not None else (1, reply.metadata.src_node_id)

    def _log_round(self, server_round: int) -> None:
        """Log what went wrong this round, in one line (if anything did and :attr:`log_rounds`)."""
        report = self.report
        if self.log_rounds and (report.dropped or report.missing or report.failed):
            failed = {self.hub_id: report.error} if report.failed else {}
            summary = failure_summary(
                len(report.missing), len(self.workers), report.dropped, failed
            )
            log(WARNING, "hub %s round %s: %s", self.hub_id, server_round, summary)

    def _check_replies(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[dict[int, tuple[Message, MetricRecord]], dict[int, ArrayRecord]]:
        """Return the valid replies and their checked, decoded arrays, by worker id.

        Every other reply is dropped, with its reason, into :attr:`report`.
        """
        valid: dict[int, tuple[Message, MetricRecord]] = {}
        decoded: dict[int, ArrayRecord] = {}  # checked arrays, decoded once for the chain
        for reply in replies:
            node = reply.metadata.src_node_id
            worker = self.workers.get(node)
            if worker is None:
                self.report.dropped.append(f"node {node}: is not a worker of this hub")
                continue
            if worker.worker_id in valid:
                self.report.dropped.append(f"worker {worker.worker_id}: replied twice")
                continue
            checked = decode_reply(reply, self._expected, self.time_steps)
            if checked.reason is not None:
                self.report.dropped.append(f"worker {worker.worker_id}: {checked.reason}")
                continue
            assert checked.arrays is not None and checked.metrics is not None and checked.values
            valid[worker.worker_id] = (reply, checked.metrics)
            decoded[worker.worker_id] = array_record(
                (k, DecodedArray.wrap(checked.arrays[k], v)) for k, v in checked.values.items()
            )
        return valid, decoded

    def _keep_model(self, num_valid: int) -> None:
        """Record that too few replies were valid: the hub keeps its model."""
        report = self.report
        report.failed = True
        first = f" (first: {report.dropped[0]})" if report.dropped else ""
        report.error = f"{num_valid} of {len(self.workers)} replies were valid{first}"

    def _checked_aggregate(
        self,
        server_round: int,
        valid: Mapping[int, tuple[Message, MetricRecord]],
        decoded: Mapping[int, ArrayRecord],
        by_id: Mapping[int, WorkerSpec],
    ) -> ArrayRecord | None:
        """Return the chain's aggregate in the sent dtypes, or None if it failed.

        The chain failed when it raised, returned no aggregate (Bulyan with too
        few replies) or an aggregate that is not finite; the reason goes to
        :attr:`report`.
        """
        report, name = self.report, type(self.strategy).__name__
        try:
            arrays = self._aggregate(server_round, valid, decoded, by_id)
        except Exception as err:  # pylint: disable=broad-except
            arrays = None
            report.error = short(f"{name} failed: {type(err).__name__}: {err}")
        else:
            if arrays is None:
                report.error = f"{name} returned no aggregate ({len(valid)} valid replies)"
        if arrays is not None:
            arrays = as_dtypes(arrays, self._expected)
            if not all(np.isfinite(self._values(k, a)).all() for k, a in arrays.items()):
                arrays = None
                report.error = "the aggregate is not finite"
        return arrays

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
            weights = {w: float(by_id[w].weight or 0.0) for w in records}
            return fedavg_record(records, weights, self._values)
        shared = common_numeric_keys([m for _, m in valid.values()])
        key = self._keys[0]
        inputs = {
            w: chain_input(r, decoded[w], m, shared, float(by_id[w].weight or 0.0), key)
            for w, (r, m) in valid.items()
        }
        node_of = {spec.worker_id: node for node, spec in self.workers.items()}
        for w in missing:  # took no step: x_i = y_d, with its own weight
            weight = float(by_id[w].weight or 0.0)
            inputs[w] = stand_in(node_of[w], model, shared, weight, key)  # type: ignore[arg-type]
        ordered = [inputs[w] for w in sorted(inputs)]  # a fixed order: bit-identical reruns
        arrays, _ = self.strategy.aggregate_train(server_round, ordered)
        return arrays

    def _fix_weights(self, valid: Mapping[int, tuple[Message, MetricRecord]]) -> None:
        """Fix every unknown ``w_i`` from the worker's ``num-examples``, once."""
        for spec in self.workers.values():
            if spec.weight is None and spec.worker_id in valid:
                spec.weight = float(valid[spec.worker_id][1][NUM_EXAMPLES])  # type: ignore[arg-type]
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

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure federated evaluation of ``arrays`` at this hub's workers."""
        return self.strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(dict(config.items())), SubGrid(grid, self.nodes)
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
