"""Run a comparison into one folder, every run once, resuming where it stopped."""

import json
import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.cli.compare.load import Comparison, RunSpec, slug
from flwr_multilevel.cli.compare.sweep import SweepOptions
from flwr_multilevel.cli.compare.table import TABLE, write_outputs
from flwr_multilevel.cli.compare.target import check_comparison_target, listed_folders
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import _read_yaml_file, num_rounds
from flwr_multilevel.run.results import (
    check_output_dir,
    release_output_dir,
    reserve_output_dir,
)


def _same_run(folder: Path, cfg: DictConfig) -> bool:
    """Whether ``folder`` holds a finished run of exactly ``cfg``."""
    if not (folder / "summary.json").is_file() or not (folder / "config.yaml").is_file():
        return False
    try:
        done = OmegaConf.to_container(_read_yaml_file(folder / "config.yaml", "compare"))
        json.loads((folder / "summary.json").read_text())
    except (ConfigError, ValueError, OSError):
        return False
    want = OmegaConf.to_container(cfg, resolve=False)
    for side in (done, want):
        if not isinstance(side, dict) or not isinstance(side.get("data"), dict):
            return False
        for key in ("output_dir", "overwrite", "simulation", "deploy"):
            side.pop(key, None)
        side["data"].pop("root", None)
    return done == want


def comparison_dir(folder: str | Path | None) -> Path:
    """Return the absolute folder of a comparison (default: ``runs/compare-<time>-<random>``)."""
    if folder is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path("runs", f"compare-{stamp}-{secrets.token_hex(3)}")
    return Path(folder).expanduser().absolute()


def check_comparison_dir(comparison: Comparison, folder: str | Path | None) -> Path:
    """Check, before anything is loaded, that a comparison may write ``folder``.

    Raises
    ------
    ConfigError
        ``--out`` is a file, a link, read-only or too long, one of its run
        folders or files is a link, or it holds what no comparison wrote or a
        damaged earlier run (:func:`.target.check_comparison_target`).
    """
    out = comparison_dir(folder)
    try:
        check_output_dir(out, overwrite=True)
    except ConfigError as err:
        raise ConfigError("--out", err.message) from None
    for name in (f"{TABLE}.md", f"{TABLE}.csv", f"{TABLE}.json"):
        if (out / name).is_symlink() or (out / name).is_dir():
            raise ConfigError("--out", f"{out / name} is a link or a folder")
    for spec in comparison.runs:
        check_output_dir(out / slug(spec.label), overwrite=True)
    check_comparison_target(out, [slug(spec.label) for spec in comparison.runs])
    return out


class Progress:
    """Prints one line per evaluation to stderr, at most every ``interval`` seconds."""

    def __init__(self, index: int, total: int, spec: RunSpec, interval: float = 2.0) -> None:
        self.prefix = f"[{index}/{total}] {spec.label}"
        cfg = spec.cfg
        self.steps = num_rounds(cfg) * int(cfg.tau)
        self.interval = interval
        self.start = time.monotonic()
        self.last = -math.inf

    def __call__(self, row: Mapping[str, float]) -> None:
        """Print a progress line for one history row."""
        now = time.monotonic()
        final = row["time_step"] >= self.steps
        if now - self.last < self.interval and not final:
            return
        self.last = now
        print(
            f"{self.prefix}: time step {int(row['time_step'])}/{self.steps} "
            f"(slot {int(row.get('time_slot', row['time_step']))}), accuracy "
            f"{row['accuracy']:.4f}, loss {row['loss']:.4f}, {now - self.start:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def run_comparison(
    comparison: Comparison,
    folder: str | Path | None = None,
    launch: Callable[..., dict[str, Any]] | None = None,
    sweep: SweepOptions | None = None,
) -> Path:
    """Run every run of a comparison into one folder; return the folder.

    Each run writes its results folder ``<folder>/<slug(label)>``; a run whose
    folder already holds a finished run of the same config is not run again,
    so an interrupted comparison resumes where it stopped. The table
    (``comparison.md``, ``comparison.csv``), ``comparison.json`` and the
    plots are rewritten after every run. With ``sweep``, the runs are Ray
    tasks, several at a time (:mod:`~flwr_multilevel.cli.compare.sweep`).
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.experiment import prepare as experiment

    if launch is None:
        from flwr_multilevel.engines.launch import launch as launch_run

        launch = launch_run
    out = check_comparison_dir(comparison, folder)
    made = reserve_output_dir(out)
    experiments = []
    try:
        for spec in comparison.runs:  # everything is checked before anything runs
            spec.cfg.output_dir = str(out / slug(spec.label))
            spec.cfg.overwrite = True
            experiments.append(experiment.prepare(spec.cfg))
    except BaseException:
        release_output_dir(made)
        raise
    runs = {spec.label: slug(spec.label) for spec in comparison.runs}
    index: dict[str, Any] = {
        "title": comparison.title,
        "runs": runs,
        **({"groups": comparison.groups} if comparison.groups else {}),
        "folders": sorted((listed_folders(out) or set()) | set(runs.values())),  # ours to replace
    }
    (out / "comparison.json").write_text(json.dumps(index, indent=1) + "\n")
    walls: dict[str, float] = {}
    todo = []
    for i, (spec, exp) in enumerate(zip(comparison.runs, experiments, strict=True), 1):
        if _same_run(exp.output_dir, spec.cfg):
            print(f"[{i}/{len(experiments)}] {spec.label}: finished before, kept", file=sys.stderr)
            summary = json.loads((exp.output_dir / "summary.json").read_text())
        elif sweep is None:
            summary = launch(exp, progress=Progress(i, len(experiments), spec))
        else:
            todo.append(spec)
            continue
        walls[spec.label] = float(summary.get("wall_s", math.nan))
        write_outputs(out, comparison, walls, finished=None if sweep is None else walls)
    if sweep is not None and todo:
        del experiments  # each task prepares its own
        _run_swept(out, comparison, todo, sweep, walls)
    return out


def _run_swept(
    out: Path,
    comparison: Comparison,
    todo: list[RunSpec],
    sweep: SweepOptions,
    walls: dict[str, float],
) -> None:
    """Run ``todo`` as a sweep, rewriting the table as each run finishes."""
    from flwr_multilevel.cli.compare.sweep import run_sweep  # pylint: disable=C0415

    if any(spec.cfg.simulation.backend == "ray" for spec in todo):
        print(
            "compare: runs with simulation.backend=ray run on the inprocess backend inside "
            "their sweep task (Ray inside a Ray task would nest; the numbers are the same)",
            file=sys.stderr,
        )

    def done(spec: RunSpec, summary: dict[str, Any]) -> None:
        walls[spec.label] = float(summary.get("wall_s", math.nan))
        write_outputs(out, comparison, walls, finished=walls)

    run_sweep(out, todo, sweep, done)
