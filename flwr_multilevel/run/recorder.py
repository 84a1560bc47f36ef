"""The run core: one recorder of a run, whatever records it.

Every path that records a run (``run`` on every backend, each deployed hub,
deploy's combined view, and the Flower-form baseline) hands each finished
round to :meth:`RunRecorder.on_round`. The recorder keeps the clock and the
counters, writes ``rounds.csv`` (one row per round) and, on the evaluation
schedule, ``history.csv`` (one row per evaluation of u) with the checkpoint
before it, stops the run when the slot budget is spent, and at the end
writes ``summary.json`` and the plots. So the same config gives the same
files and columns on every path.

Per-hub numbers (each hub's train loss every round, its test accuracy at
evaluations with ``eval.hubs``) are columns of ``rounds.csv`` and
``history.csv`` (``hub<d>_train_loss``, ``hub<d>_accuracy``) up to
:data:`WIDE_HUBS` hubs. Above, those files keep their other columns and the
per-hub numbers go to ``hubs.csv``, one row per hub and round
(:func:`hubs_rows`), so that 1,000 hubs make 1,000 rows, not 1,000 columns.
"""

import csv
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.common.logger import log

from flwr_multilevel.protocol import keys
from flwr_multilevel.run.checkpoint import save_checkpoint
from flwr_multilevel.run.results import HISTORY, ResultsFolder
from flwr_multilevel.run.state import encode
from flwr_multilevel.strategies.report import RoundReport, round_row

ROUNDS = "rounds.csv"
SUMMARY = "summary.json"
HUBS = "hubs.csv"  # per-hub numbers in long format, above WIDE_HUBS hubs
HUBS_COLUMNS = ("round", "hub", "train_loss", "accuracy")
WIDE_HUBS = 16  # up to this many hubs, per-hub numbers are columns of rounds.csv and history.csv

# scores of one evaluation: loss, test_loss, accuracy, consensus (, hub<d>_accuracy)
Evaluate = Callable[[Sequence[ArrayRecord]], Mapping[str, float]]
Progress = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class RunPlan:
    """What the recorder needs to know of a run, whatever runs it.

    Attributes
    ----------
    tau : int
        Time steps per round.
    num_rounds : int
        Rounds the run takes at most.
    eval_every : int
        Evaluate every this many time steps (and after the last round).
    num_workers, num_hubs : int
        Size of the network.
    max_time_slots : int | None (default: None)
        Stop once the virtual clock has passed this many time slots.
    """

    tau: int
    num_rounds: int
    eval_every: int
    num_workers: int
    num_hubs: int
    max_time_slots: int | None = None

    def out_of_time(self, time_slot: int) -> bool:
        """Return whether the slot budget is spent at ``time_slot``.

        Examples
        --------
        >>> plan = RunPlan(4, 10, 8, 2, 1, max_time_slots=12)
        >>> plan.out_of_time(8), plan.out_of_time(12)
        (False, True)
        """
        return self.max_time_slots is not None and time_slot >= self.max_time_slots

    def evaluates_after(self, server_round: int, time_slot: int = 0) -> bool:
        """Return whether u is scored after ``server_round``.

        When the round crosses a multiple of ``eval_every`` time steps, is the
        last one, or spends the slot budget.

        Examples
        --------
        >>> plan = RunPlan(tau=4, num_rounds=5, eval_every=8, num_workers=2, num_hubs=1)
        >>> [r for r in range(1, 6) if plan.evaluates_after(r)]
        [2, 4, 5]
        """
        tau, every = self.tau, self.eval_every
        crossed = server_round * tau // every > (server_round - 1) * tau // every
        return crossed or server_round == self.num_rounds or self.out_of_time(time_slot)


@dataclass
class Counters:
    """The run's clock and counters, summed over rounds (part of every checkpoint)."""

    steps_taken: np.ndarray
    time_slot: int = 0
    bytes_worker_hub: int = 0
    bytes_hub_hub: int = 0
    eval_s: float = 0.0
    skipped_gossip: int = 0

    def add(self, report: RoundReport) -> None:
        """Count one round."""
        for worker, steps in report.steps.items():
            self.steps_taken[worker] += steps
        self.time_slot += report.slots
        self.bytes_worker_hub += report.bytes_down + report.bytes_up
        self.bytes_hub_hub += report.bytes_hubs
        self.skipped_gossip += sum(len(peers) for peers in report.skipped_peers.values())

    def state(self) -> dict[str, Any]:
        """Return the counters as plain data (tensors and numbers only)."""
        return {
            "steps_taken": self.steps_taken.copy(),
            "time_slot": self.time_slot,
            "bytes_worker_hub": self.bytes_worker_hub,
            "bytes_hub_hub": self.bytes_hub_hub,
            "eval_s": self.eval_s,
            "skipped_gossip": self.skipped_gossip,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "Counters":
        """Return counters from :meth:`state`."""
        return cls(
            np.asarray(state["steps_taken"], dtype=np.int64).copy(),
            int(state["time_slot"]),
            int(state["bytes_worker_hub"]),
            int(state["bytes_hub_hub"]),
            float(state["eval_s"]),
            int(state["skipped_gossip"]),
        )


def hub_losses(report: RoundReport) -> dict[int, Any]:
    """Return the train loss each hub reported for the round (hubs that reported one)."""
    return {d: m.get(keys.TRAIN_LOSS) for d, m in report.hub_metrics.items() if m is not None}


def rounds_row(report: RoundReport, time_slot: int, plan: RunPlan) -> dict[str, Any]:
    """Return one ``rounds.csv`` row: the round's counters, per-hub train loss and events.

    The columns are the same on every path and for every run of ``plan.num_hubs``
    hubs; ``hub<d>_train_loss`` up to :data:`WIDE_HUBS` hubs (above: ``hubs.csv``).
    """
    losses = hub_losses(report) if plan.num_hubs <= WIDE_HUBS else {}
    wide = range(plan.num_hubs if plan.num_hubs <= WIDE_HUBS else 0)
    return {
        **round_row(report, plan.tau, time_slot),
        "seconds": round(report.seconds, 4),
        **{f"hub{d}_train_loss": losses.get(d) for d in wide},
        "failed_hubs": " ".join(str(d) for d in sorted(report.failed_hubs)),
        "skipped_peers": " ".join(
            f"{d}:{'/'.join(map(str, peers))}" for d, peers in sorted(report.skipped_peers.items())
        ),
        "dropped_reasons": " | ".join(report.dropped),
    }


def hubs_rows(
    server_round: int, num_hubs: int, losses: Mapping[int, Any], scores: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Return the ``hubs.csv`` rows of a round: each hub's train loss and test accuracy.

    ``accuracy`` is empty in rounds without an evaluation of the hubs, and
    ``train_loss`` in round 0 (before any training).

    Examples
    --------
    >>> hubs_rows(2, 2, {0: 0.5, 1: 0.25}, {"hub1_accuracy": 0.9})
    [{'round': 2, 'hub': 0, 'train_loss': 0.5, 'accuracy': None}, \
{'round': 2, 'hub': 1, 'train_loss': 0.25, 'accuracy': 0.9}]
    """
    return [
        {
            "round": server_round,
            "hub": d,
            "train_loss": losses.get(d),
            "accuracy": scores.get(f"hub{d}_accuracy"),
        }
        for d in range(num_hubs)
    ]


def _append_rows(path: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append ``rows`` to a CSV file of :data:`HUBS_COLUMNS` in one write (header if new)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=HUBS_COLUMNS)
    if not os.path.lexists(path):
        writer.writeheader()
    writer.writerows(rows)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags, 0o644), "a", newline="") as file:
        file.write(text.getvalue())
        file.flush()


def _kept_hubs_rows(path: Any, last_round: int) -> list[dict[str, str]]:
    """Return the complete ``hubs.csv`` rows of rounds up to ``last_round`` (a resume's)."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [
        r
        for r in rows
        if None not in r
        and all(r.get(c) is not None for c in HUBS_COLUMNS)
        and r["round"].isdigit()
        and int(r["round"]) <= last_round
    ]


class RunRecorder:
    """Records one run into its results folder, round by round.

    Parameters
    ----------
    folder : ResultsFolder
        The results folder (its run files already written, or resumed).
    plan : RunPlan
        Rounds, evaluation schedule, slot budget and network size.
    evaluate : Callable[[Sequence[ArrayRecord]], Mapping[str, float]] | None
        Scores of the hub models (``loss``, ``test_loss``, ``accuracy``,
        ``consensus``...); None records no history (a deployed hub, whose
        models deploy's combined view scores).
    engine_state : Callable[[], dict[str, Any] | None] | None (default: None)
        Returns what the engine needs to continue after the last round; with
        it, a checkpoint is written before every history row.
    progress : Callable[[dict[str, float]], None] | None (default: None)
        Called after every round with its round, time step and slot and the
        latest evaluation's scores (``evaluated`` is 1.0 when scored now).
    save_models : Callable[[int, Sequence[ArrayRecord]], None] | None (default: None)
        Called with the models of every evaluation round (default: the
        folder's ``hub_models.pt``).
    config : str (default: "")
        The run's resolved config as YAML, kept in every checkpoint: resuming
        checks that the folder's config is still the same run.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        folder: ResultsFolder,
        plan: RunPlan,
        evaluate: Evaluate | None,
        *,
        engine_state: Callable[[], dict[str, Any] | None] | None = None,
        progress: Progress | None = None,
        save_models: Callable[[int, Sequence[ArrayRecord]], None] | None = None,
        config: str = "",
    ) -> None:
        self.folder, self.plan, self.evaluate, self.config = folder, plan, evaluate, config
        self.engine_state, self.progress = engine_state, progress
        self.save_models = save_models or folder.save_hub_models
        self.counters = Counters(np.zeros(plan.num_workers, dtype=np.int64))
        self.last_row: dict[str, Any] = {}
        self.last_round = 0
        self.start = time.perf_counter()
        self.long_hubs = plan.num_hubs > WIDE_HUBS  # per-hub numbers in hubs.csv
        self._losses: dict[int, Any] = {}  # the hubs' train losses of the round being recorded

    def begin(self, initial: Sequence[ArrayRecord], state: Mapping[str, Any] | None) -> None:
        """Start the clock: record round 0 of a new run, or continue from a checkpoint."""
        self.start = time.perf_counter()
        hubs = self.folder.path / HUBS
        if state is None:
            hubs.unlink(missing_ok=True)  # a new run's, never an overwritten run's rows
            self.record(0, initial)
            return
        if self.long_hubs:  # the rows up to the checkpoint's round (later ones come again)
            kept = _kept_hubs_rows(hubs, int(state["round"]))
            self.folder.write_rows(HUBS, HUBS_COLUMNS, kept)
        self.counters = Counters.from_state(state["counters"])
        self.last_row = dict(state["last_row"])
        self.last_round = int(state["round"])
        self.start -= float(state["elapsed"])

    def on_round(self, report: RoundReport, models: Sequence[ArrayRecord]) -> bool:
        """Record a finished round; return True to stop the run (slot budget spent)."""
        self.counters.add(report)
        self.last_round = report.server_round
        self.folder.append_row(ROUNDS, rounds_row(report, self.counters.time_slot, self.plan))
        evaluated = self.plan.evaluates_after(report.server_round, self.counters.time_slot)
        self._losses = hub_losses(report) if self.long_hubs else {}
        if evaluated:
            self.record(report.server_round, models)
        elif self.long_hubs:
            self._append_hubs(report.server_round, {})
        if self.progress is not None and self.evaluate is not None:
            self.progress(
                {
                    **self.last_row,
                    "round": report.server_round,
                    "time_step": report.server_round * self.plan.tau,
                    "time_slot": self.counters.time_slot,
                    "evaluated": float(evaluated),
                }
            )
        return self.plan.out_of_time(self.counters.time_slot)

    def record(self, server_round: int, models: Sequence[ArrayRecord]) -> None:
        """Save the models of an evaluation round, its checkpoint, then its history row."""
        self.save_models(server_round, models)
        if self.evaluate is None:
            if self.long_hubs:
                self._append_hubs(server_round, {})
            return
        began = time.perf_counter()
        scores = dict(self.evaluate(models))
        self.counters.eval_s += time.perf_counter() - began
        if self.long_hubs:  # before the checkpoint, so a resume finds this round's rows
            hub_scores = {k: scores.pop(k) for k in list(scores) if k.startswith("hub")}
            self._append_hubs(server_round, hub_scores)
        self.last_row = {
            "round": server_round,
            "time_step": server_round * self.plan.tau,
            "time_slot": self.counters.time_slot,
            **scores,
            "steps_taken": int(self.counters.steps_taken.sum()),
            "bytes_worker_hub": self.counters.bytes_worker_hub,
            "bytes_hub_hub": self.counters.bytes_hub_hub,
            "elapsed_s": round(time.perf_counter() - self.start, 3),
        }
        engine = self.engine_state() if self.engine_state is not None else None
        if engine is not None and server_round > 0:  # before the row: history never ahead
            save_checkpoint(self.folder.path, encode(self.checkpoint(server_round, engine)))
        self.folder.append_row(HISTORY, self.last_row)
        log(
            INFO,
            "round %s: accuracy %.4f, loss %.4f, consensus %.3g",
            server_round,
            self.last_row["accuracy"],
            self.last_row["loss"],
            self.last_row["consensus"],
        )

    def _append_hubs(self, server_round: int, scores: Mapping[str, Any]) -> None:
        """Append the ``hubs.csv`` rows of ``server_round`` (its train losses, and ``scores``)."""
        losses = self._losses if server_round > 0 else {}
        if not losses and not scores:
            return  # nothing per hub (round 0 without eval.hubs, or no hub reported)
        rows = hubs_rows(server_round, self.plan.num_hubs, losses, scores)
        _append_rows(self.folder.path / HUBS, rows)

    def checkpoint(self, server_round: int, engine: dict[str, Any]) -> dict[str, Any]:
        """Return the checkpoint after ``server_round``: the engine's state and the recorder's."""
        return {
            "config": self.config,
            "round": server_round,
            "mll": engine,
            "counters": self.counters.state(),
            "last_row": self.last_row,
            "elapsed": time.perf_counter() - self.start,
        }

    def finish(self, **extra: Any) -> dict[str, Any]:
        """Write ``summary.json`` (and the plots, when there is a history); return the summary.

        The summary is the last history row, the folder, the wall and
        evaluation times, the steps of every worker and how many neighbour
        models were skipped in gossip, plus ``extra``.
        """
        summary = {
            **self.last_row,
            "rounds_run": self.last_round,
            "output_dir": str(self.folder.path),
            "wall_s": round(time.perf_counter() - self.start, 3),
            "eval_s": round(self.counters.eval_s, 3),
            "steps_per_worker": self.counters.steps_taken,
            "skipped_gossip": self.counters.skipped_gossip,
            **extra,
        }
        self.folder.write_json(SUMMARY, summary)
        if self.evaluate is not None and self.last_row:
            from flwr_multilevel.run.plots import plot_run  # pylint: disable=C0415

            plot_run(self.folder.path)
        return summary
