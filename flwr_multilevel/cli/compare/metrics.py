"""The numbers of a comparison: each run's history summed up, targets, means over seeds.

Pure functions of history rows (``time_step``, ``accuracy``, ``loss``, ...);
:mod:`flwr_multilevel.cli.compare.table` writes them as tables.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any


def mean_row(label: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the mean of every numeric column of ``rows`` (None where a run has None).

    Examples
    --------
    >>> mean_row("L", [{"run": "a", "final_loss": 1.0}, {"run": "b", "final_loss": 3.0}])
    {'run': 'L (mean of 2 seeds)', 'final_loss': 2.0}
    """
    out: dict[str, Any] = {"run": f"{label} (mean of {len(rows)} seeds)"}
    for key in rows[0]:
        values = [row.get(key) for row in rows]
        if key == "run":
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(values) / len(values)  # type: ignore[arg-type]
        elif key == "setup":
            out[key] = values[0]
        else:
            out[key] = None
    return out


def first_reaching(
    rows: Sequence[Mapping[str, float]], metric: str, target: float, above: bool
) -> Mapping[str, float] | None:
    """Return the first history row whose ``metric`` reached ``target``, or None.

    Examples
    --------
    >>> rows = [{"accuracy": 0.5}, {"accuracy": 0.9}, {"accuracy": 0.95}]
    >>> first_reaching(rows, "accuracy", 0.9, above=True)
    {'accuracy': 0.9}
    """
    for row in rows:
        value = row[metric]
        if value == value and (value >= target if above else value <= target):
            return row
    return None


def default_targets(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> tuple[float, float]:
    """Return targets that every run reaches: (accuracy, training loss).

    The accuracy is 99% of the lowest best accuracy of the runs, the loss
    101% of the highest lowest loss.

    Examples
    --------
    >>> runs = {"a": [{"accuracy": 0.9, "loss": 0.3}], "b": [{"accuracy": 0.8, "loss": 0.5}]}
    >>> default_targets(runs)
    (0.792, 0.505)
    """
    best_acc = [max(r["accuracy"] for r in rows) for rows in histories.values() if rows]
    losses = [[r["loss"] for r in rows if r["loss"] == r["loss"]] for rows in histories.values()]
    best_loss = [min(values) for values in losses if values]
    accuracy = math.floor(0.99 * min(best_acc) * 1000) / 1000 if best_acc else math.nan
    loss = math.ceil(1.01 * max(best_loss) * 10000) / 10000 if best_loss else math.nan
    return accuracy, loss


def summarize(
    rows: Sequence[Mapping[str, float]], target_accuracy: float, target_loss: float
) -> dict[str, float | None]:
    """Return the comparison columns of one run's history.

    Final and best accuracy and training loss, the clock at the end, and the
    time step, time slot and gradient steps at which the run first reached
    ``target_accuracy`` (and the time slot for ``target_loss``); None where
    it never did. Bytes are totals in MB (10^6 bytes).
    """
    last = rows[-1]
    losses = [r["loss"] for r in rows if r["loss"] == r["loss"]]
    hit_acc = first_reaching(rows, "accuracy", target_accuracy, above=True)
    hit_loss = first_reaching(rows, "loss", target_loss, above=False)

    def count(row: Mapping[str, float] | None, key: str) -> int | None:
        return None if row is None else int(row.get(key, row["time_step"]))

    return {
        "final_accuracy": last["accuracy"],
        "best_accuracy": max(r["accuracy"] for r in rows),
        "final_loss": last["loss"],
        "best_loss": min(losses) if losses else math.nan,
        "time_steps": count(last, "time_step"),
        "time_slots": count(last, "time_slot"),
        "gradient_steps": count(last, "steps_taken"),
        "steps_to_acc": count(hit_acc, "time_step"),
        "slots_to_acc": count(hit_acc, "time_slot"),
        "grad_steps_to_acc": count(hit_acc, "steps_taken"),
        "slots_to_loss": count(hit_loss, "time_slot"),
        "mb_worker_hub": last.get("bytes_worker_hub", math.nan) / 1e6,
        "mb_hub_hub": last.get("bytes_hub_hub", math.nan) / 1e6,
    }
