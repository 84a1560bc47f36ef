"""What a round did, and its metrics as Flower records."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from flwr_multilevel.protocol.keys import (
    BYTES_DOWN,
    BYTES_HUBS,
    BYTES_UP,
    DROPPED,
    MISSING,
    SLOTS,
    STEPS,
    hub_key,
)


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
        Gradient steps taken by each worker whose reply was valid.
    dropped : list[str]
        One line per reply that was not used, and why.
    missing : list[int]
        Workers without a valid reply (they count as taking no step).
    hub_metrics : dict[int, MetricRecord | None]
        Each hub's aggregated train metrics.
    failed_hubs : dict[int, str]
        Hubs that kept their model this round, and why (no valid reply, or
        aggregation failed).
    skipped_peers : dict[int, list[int]]
        Per hub, the neighbours left out of this round's gossip.
    slots : int
        Time slots the round lasted on the virtual clock (tau for MLL-SGD).
    bytes_down, bytes_up, bytes_hubs : int
        Serialized array bytes hub -> workers, workers -> hub, hub -> hub.
    seconds : float
        Wall time of the round.
    """

    server_round: int
    gossip: bool
    steps: dict[int, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    hub_metrics: dict[int, MetricRecord | None] = field(default_factory=dict)
    failed_hubs: dict[int, str] = field(default_factory=dict)
    skipped_peers: dict[int, list[int]] = field(default_factory=dict)
    slots: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    bytes_hubs: int = 0
    seconds: float = 0.0


OnRound = Callable[[RoundReport, list[ArrayRecord]], bool | None]


def _number(value: Any) -> float:
    return float(value)


def combine_hubs(per_hub: Mapping[int, MetricRecord], b: np.ndarray) -> MetricRecord:
    """Return the ``b_d``-weighted average over hubs of every numeric metric all hubs have.

    Hubs missing from ``per_hub`` are left out and the weights renormalised.

    Examples
    --------
    >>> rec = combine_hubs({0: MetricRecord({"loss": 1.0}), 2: MetricRecord({"loss": 4.0})},
    ...                    np.array([0.5, 0.3, 0.25]))
    >>> round(float(rec["loss"]), 6)
    2.0
    """
    keys = set.intersection(*(set(m.keys()) for m in per_hub.values()))
    numeric = [
        k for k in sorted(keys) if all(isinstance(m[k], (int, float)) for m in per_hub.values())
    ]
    total = sum(b[d] for d in per_hub)
    return MetricRecord(
        {k: float(sum(b[d] * _number(m[k]) for d, m in per_hub.items()) / total) for k in numeric}
    )


def failure_summary(
    missing: int, workers: int, dropped: Sequence[str], failed: Mapping[int, str]
) -> str:
    """Return one line for what went wrong in a round: counts, and the first reason of each kind.

    Parameters
    ----------
    missing : int
        Workers without a valid reply, of ``workers``.
    workers : int
        Workers of the hubs summarised.
    dropped : Sequence[str]
        One reason per reply that was not used (``"worker 3: timed out: ..."``).
    failed : Mapping[int, str]
        Hubs that kept their model, and why.

    Examples
    --------
    >>> failure_summary(1, 4, ["worker 1: the worker failed: down"], {})  # doctest: +ELLIPSIS
    '1 of 4 workers without a valid reply (1 reply dropped; first: worker 1: the worker ...)'
    >>> failure_summary(2, 2, ["worker 0: down"] * 2, {0: "0 of 2 replies were valid"})[-20:]
    'hub 0 kept its model'
    """
    parts = []
    if missing or dropped:
        first = f"; first: {dropped[0]}" if dropped else ""
        replies = "reply" if len(dropped) == 1 else "replies"
        parts.append(
            f"{missing} of {workers} workers without a valid reply "
            f"({len(dropped)} {replies} dropped{first})"
        )
    if failed:
        hubs = sorted(failed)
        named = ", ".join(str(d) for d in hubs[:10]) + (", ..." if len(hubs) > 10 else "")
        kept = (
            f"hub {named} kept its model" if len(hubs) == 1 else f"hubs {named} kept their models"
        )
        # a reason other than the replies' own (the rule failed) is worth its words
        other = [f"hub {d}: {failed[d]}" for d in hubs if "replies were valid" not in failed[d]]
        parts.append(f"{kept} ({other[0]})" if other else kept)
    return " ".join("; ".join(parts).split())[:600]


def round_record(report: RoundReport, b: np.ndarray) -> MetricRecord:
    """Return a round's metrics.

    Its counters, the hubs' metrics combined with ``b_d``, and each hub's own
    under ``hub<d>-<key>``.
    """
    metrics = MetricRecord(
        {
            STEPS: sum(report.steps.values()),
            MISSING: len(report.missing),
            DROPPED: len(report.dropped),
            SLOTS: report.slots,
            BYTES_DOWN: report.bytes_down,
            BYTES_UP: report.bytes_up,
            BYTES_HUBS: report.bytes_hubs,
        }
    )
    hub_records = {d: m for d, m in report.hub_metrics.items() if m}
    if hub_records:
        for key, value in combine_hubs(hub_records, b).items():
            if key not in metrics:
                metrics[key] = value
    for d, record in hub_records.items():
        for key, value in record.items():
            metrics[hub_key(d, key)] = value
    return metrics


def round_row(report: RoundReport, tau: int, time_slot: int) -> dict[str, Any]:
    """Return the columns every ``rounds.csv`` row starts with (a run's, or one hub's).

    Examples
    --------
    >>> row = round_row(RoundReport(3, gossip=True, slots=4), tau=4, time_slot=12)
    >>> row["time_step"], row["gossip"], row["steps"]
    (12, 1, 0)
    """
    return {
        "round": report.server_round,
        "time_step": report.server_round * tau,
        "time_slot": time_slot,
        "slots": report.slots,
        "gossip": int(report.gossip),
        "steps": sum(report.steps.values()),
        "bytes_down": report.bytes_down,
        "bytes_up": report.bytes_up,
        "bytes_hubs": report.bytes_hubs,
        "dropped": len(report.dropped),
        "missing": len(report.missing),
    }
