"""The table and plots of a comparison folder: ``comparison.md``, ``comparison.csv``, PNGs."""

import csv
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flwr_multilevel.cli.compare.load import Comparison, slug
from flwr_multilevel.cli.compare.metrics import default_targets, mean_row, summarize
from flwr_multilevel.run.plots import plot_histories
from flwr_multilevel.run.results import read_history

TABLE = "comparison"


COLUMNS = {
    "run": "run",
    "setup": "hubs x workers, tau, q",
    "final_accuracy": "final acc",
    "best_accuracy": "best acc",
    "final_loss": "final loss",
    "best_loss": "best loss",
    "time_steps": "time steps",
    "time_slots": "time slots",
    "gradient_steps": "grad steps",
    "steps_to_acc": "steps to acc",
    "slots_to_acc": "slots to acc",
    "grad_steps_to_acc": "grad steps to acc",
    "slots_to_loss": "slots to loss",
    "mb_worker_hub": "MB worker<->hub",
    "mb_hub_hub": "MB hub<->hub",
    "wall_s": "wall s",
}


def _cell(value: Any) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) >= 10:
            return str(int(value))
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def setup_of(cfg: DictConfig) -> str:
    """Return a short description of a run's network and schedule."""
    workers = cfg.hubs.workers
    wait = ", waits" if cfg.wait_for_slowest else ""
    strategy = "" if cfg.strategy.name == "FedAvg" else f", {cfg.strategy.name}"
    return f"{cfg.hubs.count}x{workers} {cfg.hubs.graph}, tau={cfg.tau}, q={cfg.q}{wait}{strategy}"


def write_table(
    folder: Path,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    target_accuracy: float,
    target_loss: float,
) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.csv``; return both paths."""
    csv_path, md_path = folder / f"{TABLE}.csv", folder / f"{TABLE}.md"
    with csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    lines = [
        f"# {title}",
        "",
        f"Targets: test accuracy >= {target_accuracy:g}, training loss <= {target_loss:g}. "
        "'steps', 'slots' and 'grad steps' to a target are the time step, time slot and "
        "total gradient steps of the first evaluation that reached it.",
        "",
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += [
        "| "
        + " | ".join(
            f"{row[k]:.1f}"
            if k == "wall_s" and isinstance(row.get(k), float)
            else _cell(row.get(k))
            for k in COLUMNS
        )
        + " |"
        for row in rows
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def write_outputs(
    out: Path,
    comparison: Comparison,
    walls: Mapping[str, float] | None = None,
    finished: Collection[str] | None = None,
) -> tuple[Path, list[Path]]:
    """(Re)write the table and plots of a comparison folder from its finished runs.

    ``finished``: the labels of the runs to show (a sweep's runs still in
    flight have a history too); None: every run with a history.
    """
    histories, specs = {}, {}
    for spec in comparison.runs:
        folder = out / slug(spec.label)
        if finished is not None and spec.label not in finished:
            continue
        if (folder / "history.csv").is_file():
            histories[spec.label] = read_history(folder)
            specs[spec.label] = spec
    target_acc, target_loss = default_targets(histories)
    target_acc = comparison.target_accuracy or target_acc
    target_loss = comparison.target_loss or target_loss
    rows = []
    for label, history in histories.items():
        rows.append(
            {
                "run": label,
                "setup": setup_of(specs[label].cfg),
                **summarize(history, target_acc, target_loss),
                "wall_s": (walls or {}).get(label),
            }
        )
    groups = {
        label: [m for m in members if m in histories]
        for label, members in (comparison.groups or {}).items()
    }
    groups = {label: members for label, members in groups.items() if members}
    if groups:
        by_run = {row["run"]: row for row in rows}
        rows += [mean_row(label, [by_run[m] for m in members]) for label, members in groups.items()]
    md_path, _ = write_table(out, comparison.title, rows, target_acc, target_loss)
    return md_path, plot_histories(histories, out, comparison.title, groups or None)
