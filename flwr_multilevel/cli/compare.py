"""Compare several configs on the same seed, data, partition and clock.

A comparison is a list of runs, each a full config. ``flwr-multilevel compare``
takes config files, shipped baseline names (``local_sgd``, see ``baselines/``)
or comparison files, which hold several runs::

    comparison: "q versus tau at q*tau = 32"   # title of the table and plots
    common: {data: {name: mnist}}              # keys every run shares
    runs:
      Distributed SGD: {base: distributed_sgd, hubs: {workers: 20}}
      MLL-SGD q=4 tau=8: {tau: 8, q: 4}
    targets: {accuracy: 0.9, loss: 0.3}        # optional

A run's config is the default, then ``common``, then its ``base`` (a
baseline name or a YAML path), then its own keys, then the command line's
``key=value`` overrides.
"""

import csv
import json
import math
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import (
    _read_yaml_file,
    apply_overrides,
    default_config,
    load_config,
    merge,
    num_rounds,
    validate,
)
from flwr_multilevel.run.plots import plot_histories
from flwr_multilevel.run.results import (
    check_output_dir,
    read_history,
    release_output_dir,
    reserve_output_dir,
)

SHARED_KEYS = ("seed", "data")
TABLE = "comparison"


@dataclass(frozen=True)
class RunSpec:
    """One run of a comparison: its label and its full config."""

    label: str
    cfg: DictConfig


@dataclass
class Comparison:
    """What ``compare`` runs: a title, the runs and optional targets."""

    title: str
    runs: list[RunSpec]
    target_accuracy: float | None = None
    target_loss: float | None = None
    groups: dict[str, list[str]] | None = None  # label -> its runs' labels, one per seed


def with_seeds(comparison: Comparison, seeds: Sequence[int]) -> Comparison:
    """Return ``comparison`` with every run repeated once per seed.

    Run ``L`` becomes ``L [seed s]`` for each ``s``; the table adds a mean row
    per run and the plots draw the mean with a min-max band.

    Raises
    ------
    ConfigError
        ``--seeds``: no seed, a repeated one, or one that is not an integer >= 0.
    """
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError("--seeds", f"expected distinct integers >= 0, got {list(seeds)}")
    runs: list[RunSpec] = []
    groups: dict[str, list[str]] = {}
    for spec in comparison.runs:
        groups[spec.label] = []
        for seed in seeds:
            cfg = spec.cfg.copy()
            cfg.seed = int(seed)
            label = f"{spec.label} [seed {seed}]"
            runs.append(RunSpec(label, cfg))
            groups[spec.label].append(label)
    return Comparison(
        comparison.title, runs, comparison.target_accuracy, comparison.target_loss, groups
    )


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


def baselines_dir() -> Path:
    """Return the folder of the shipped baseline configs (``flwr_multilevel/baselines``).

    The configs are data: nothing imports them.
    """
    return Path(__file__).resolve().parents[1] / "baselines"


def baseline_names() -> list[str]:
    """Return the names of the shipped baselines (``local_sgd``, ...)."""
    return sorted(path.stem for path in baselines_dir().glob("*.yaml"))


def baseline_path(name: str) -> Path | None:
    """Return the shipped config of a baseline name (``local_sgd``), or None."""
    path = baselines_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def _read_yaml(source: str) -> tuple[Path, DictConfig]:
    path = baseline_path(source) or Path(source)
    if not path.is_file():
        names = baseline_names()
        raise ConfigError(
            "compare",
            f"expected a YAML file or a baseline name ({', '.join(names)}), got {source[:200]!r}",
        )
    loaded = _read_yaml_file(path, "compare")
    if not isinstance(loaded, DictConfig):
        raise ConfigError("compare", f"{path}: expected a mapping of config keys")
    return path, loaded


def _mapping(key: str, value: Any) -> dict[str, Any]:
    """Return ``value`` (a mapping or null) as a plain dict; else raise ConfigError."""
    if value is None:
        return {}
    plain = OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
    if not isinstance(plain, dict):
        raise ConfigError(key, f"expected a mapping, got {plain!r}"[:300])
    return {str(k): v for k, v in plain.items()}


def _target(key: str, value: Any) -> float | None:
    if value is None:
        return None
    real = isinstance(value, int | float) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or value < 0:
        raise ConfigError(key, f"expected a finite number >= 0, got {value!r}")
    return float(value)


def _comparison_file(path: Path, spec: DictConfig, overrides: Sequence[str]) -> Comparison:
    unknown = {str(key) for key in spec.keys()} - {"comparison", "common", "runs", "targets"}
    if unknown:
        raise ConfigError(
            f"{path.name}: {sorted(unknown)[0]}",
            "unknown key in a comparison file (expected comparison, common, runs, targets)",
        )
    where = path.name
    runs_spec = _mapping(f"{where}: runs", spec.get("runs"))
    if not runs_spec:
        raise ConfigError(f"{where}: runs", "expected a mapping of run label -> config keys")
    common = _mapping(f"{where}: common", spec.get("common"))
    title = spec.get("comparison", path.stem)
    if not isinstance(title, str | int | float) or isinstance(title, bool):
        raise ConfigError(f"{where}: comparison", f"expected a title, got {title!r}"[:300])
    runs = []
    for label, value in runs_spec.items():
        keys = _mapping(f"{where}: runs.{label}", value)
        base = keys.pop("base", None)
        cfg = merge(default_config(), common, f"{where}: common")
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError(f"{where}: runs.{label}.base", f"expected a name, got {base!r}")
            base_path, base_keys = _read_yaml(base)
            cfg = merge(cfg, base_keys, str(base_path))
        cfg = merge(cfg, keys, f"{where}: runs.{label}")
        runs.append(RunSpec(str(label), apply_overrides(cfg, overrides)))
    targets = _mapping(f"{where}: targets", spec.get("targets"))
    extra = set(targets) - {"accuracy", "loss"}
    if extra:
        raise ConfigError(f"{where}: targets.{sorted(extra)[0]}", "expected accuracy or loss")
    return Comparison(
        str(title),
        runs,
        _target(f"{where}: targets.accuracy", targets.get("accuracy")),
        _target(f"{where}: targets.loss", targets.get("loss")),
    )


def load_comparison(sources: Sequence[str], overrides: Sequence[str] = ()) -> Comparison:
    """Return the runs of config files, baseline names and comparison files.

    Raises
    ------
    ConfigError
        A file that is missing or not YAML, an unknown key, or runs that
        differ in ``seed`` or ``data`` (they would not be comparable).
    """
    if not sources:
        raise ConfigError("compare", "expected at least one config, baseline or comparison file")
    comparison = Comparison("", [])
    for source in sources:
        path, loaded = _read_yaml(source)
        if "runs" in loaded:
            part = _comparison_file(path, loaded, overrides)
            comparison.runs.extend(part.runs)
            comparison.title = comparison.title or part.title
            comparison.target_accuracy = comparison.target_accuracy or part.target_accuracy
            comparison.target_loss = comparison.target_loss or part.target_loss
        else:
            comparison.runs.append(RunSpec(path.stem, load_config(path, overrides)))
    labels = [run.label for run in comparison.runs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError("compare", f"expected distinct run labels, {duplicates[0]!r} repeats")
    folders: dict[str, str] = {}
    for label in labels:
        if len(label) > 100 or not re.search(r"[A-Za-z0-9]", label):
            raise ConfigError(
                "compare",
                f"expected run labels of 1 to 100 characters with a letter or digit, "
                f"got {label[:40]!r}",
            )
        folder = slug(label)
        if folder in folders:
            raise ConfigError(
                "compare",
                f"run labels {folders[folder]!r} and {label!r} map to one folder {folder!r}; "
                "rename one",
            )
        folders[folder] = label
    comparison.runs = [RunSpec(run.label, validate(run.cfg)) for run in comparison.runs]
    first = comparison.runs[0]
    for run in comparison.runs[1:]:
        for key in SHARED_KEYS:
            if _shared(run.cfg, key) != _shared(first.cfg, key):
                raise ConfigError(
                    key,
                    f"runs {first.label!r} and {run.label!r} differ; a comparison needs the "
                    "same seed and data (set it once, on the command line or in `common`)",
                )
    comparison.title = comparison.title or " vs ".join(labels)
    return comparison


def _shared(cfg: DictConfig, key: str) -> Any:
    """Return what runs must share under ``key`` (where the data lives is not part of it)."""
    value = cfg[key]
    if not OmegaConf.is_config(value):
        return value
    plain = OmegaConf.to_container(value)
    if isinstance(plain, dict):
        plain.pop("root", None)
    return plain


def slug(label: str) -> str:
    """Return a folder name for a run label.

    Examples
    --------
    >>> slug("MLL-SGD q=4 tau=8")
    'mll-sgd_q4_tau8'
    """
    text = re.sub(r"[^a-z0-9.+-]+", "_", label.lower().replace("=", ""))
    text = text.strip("_.") or "run"  # never '.', '..' or a hidden folder
    return text


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
        for key in ("output_dir", "overwrite", "simulation"):
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
        ``--out`` is a file, a link, read-only or too long, or one of its run
        folders or files is a link.
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
) -> Path:
    """Run every run of a comparison into one folder; return the folder.

    Each run writes its results folder ``<folder>/<slug(label)>``; a run whose
    folder already holds a finished run of the same config is not run again,
    so an interrupted comparison resumes where it stopped. The table
    (``comparison.md``, ``comparison.csv``), ``comparison.json`` and the
    plots are rewritten after every run.
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
    index: dict[str, Any] = {
        "title": comparison.title,
        "runs": {spec.label: slug(spec.label) for spec in comparison.runs},
        **({"groups": comparison.groups} if comparison.groups else {}),
    }
    (out / "comparison.json").write_text(json.dumps(index, indent=1) + "\n")
    walls: dict[str, float] = {}
    for i, (spec, exp) in enumerate(zip(comparison.runs, experiments, strict=True), 1):
        if _same_run(exp.output_dir, spec.cfg):
            print(f"[{i}/{len(experiments)}] {spec.label}: finished before, kept", file=sys.stderr)
            summary = json.loads((exp.output_dir / "summary.json").read_text())
        else:
            summary = launch(exp, progress=Progress(i, len(experiments), spec))
        walls[spec.label] = float(summary.get("wall_s", math.nan))
        write_outputs(out, comparison, walls)
    return out


def write_outputs(
    out: Path, comparison: Comparison, walls: Mapping[str, float] | None = None
) -> tuple[Path, list[Path]]:
    """(Re)write the table and plots of a comparison folder from its finished runs."""
    histories, specs = {}, {}
    for spec in comparison.runs:
        folder = out / slug(spec.label)
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


def load_finished(folders: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    """Return label -> history of run folders and comparison folders.

    Raises
    ------
    ConfigError
        A folder that holds neither ``history.csv`` nor ``comparison.json``.
    """
    histories: dict[str, list[dict[str, float]]] = {}
    for name in folders:
        folder = Path(name)
        if (folder / "comparison.json").is_file():
            for label, sub in read_index(folder)[1].items():
                if (folder / sub / "history.csv").is_file():
                    histories[label] = read_history(folder / sub)
        elif (folder / "history.csv").is_file():
            histories[folder.name] = read_history(folder)
        else:
            raise ConfigError(
                "plot", f"expected a run or comparison folder, {name!r} holds no results"
            )
    return histories


def read_index(folder: Path) -> tuple[str | None, dict[str, str]]:
    """Return (title, label -> run subfolder) of a comparison folder's ``comparison.json``.

    Raises
    ------
    ConfigError
        ``plot``: the index is unreadable, not JSON, or names a folder outside.
    """
    path = folder / f"{TABLE}.json"
    try:
        if path.stat().st_size > 10_000_000:
            raise ConfigError("plot", f"{path}: larger than 10 MB")
        index = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ConfigError("plot", f"{path} cannot be read ({err.strerror})") from None
    except (UnicodeDecodeError, ValueError):
        raise ConfigError("plot", f"{path} is not a JSON file") from None
    runs = index.get("runs") if isinstance(index, dict) else None
    title = index.get("title") if isinstance(index, dict) else None
    if not isinstance(runs, dict) or not isinstance(title, str | None):
        raise ConfigError("plot", f"{path}: expected a title and a mapping of runs")
    for label, sub in runs.items():
        if not isinstance(sub, str) or sub in ("", ".", "..") or "/" in sub or "\\" in sub:
            raise ConfigError("plot", f"{path}: run {label!r} names no folder inside")
    return title, runs
