"""What ``compare`` runs: config files, baseline names and comparison files, as runs.

A run's config is the default, then ``common``, then its ``base`` (a
baseline name or a YAML path), then its own keys, then the command line's
``key=value`` overrides. Runs must share ``seed`` and ``data``.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.cli.compare.baselines import baseline_names, baseline_path
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import (
    _read_yaml_file,
    apply_overrides,
    default_config,
    load_config,
    merge,
    validate,
)

SHARED_KEYS = ("seed", "data")


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
