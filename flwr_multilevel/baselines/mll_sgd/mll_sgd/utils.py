"""Run-config helpers and the results folder of the baseline.

The run config has the keys of flwr-multilevel's ``default.yaml``, flattened
(``hubs.count``, ``rates.distribution``, ``data.name``...), with the same
meaning; ``MLLSGD.from_run_config`` reads the network's, these helpers the rest.
"""

import csv
import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flwr.serverapp.strategy import Result

from flwr_multilevel.strategies.app_config import dotted_keys, hub_sizes_of

# The keys of [tool.flwr.app.config], in its order (tests/test_flower_baseline.py compares them)
APP_KEYS = (
    "rounds",
    "time_steps",
    "max_time_slots",
    "hubs.count",
    "hubs.workers",
    "tau",
    "q",
    "hubs.graph",
    "hubs.mixing",
    "strategy.name",
    "wait_for_slowest",
    "weighting",
    "rates.distribution",
    "rates.p",
    "rates.low",
    "rates.high",
    "rates.slow_fraction",
    "rates.p_slow",
    "rates.p_fast",
    "rates.values",
    "lr",
    "batch_size",
    "seed",
    "data.name",
    "data.root",
    "data.partition",
    "data.alpha",
    "data.shards_per_worker",
    "model.name",
    "simulation.device",
    "simulation.timeout",
    "eval.every",
    "eval.train_examples",
    "output_dir",
)


def num_workers(run_config: Mapping[str, Any]) -> int:
    """Return the number of workers N (one SuperNode each).

    Examples
    --------
    >>> num_workers({"hubs.count": 3, "hubs.workers": 4}), num_workers({"hubs.workers": "2,3"})
    (12, 5)
    """
    return sum(hub_sizes_of(run_config))


def optional_count(run_config: Mapping[str, Any], key: str) -> int | None:
    """Return an integer >= 1, or None for ``""`` (null) or an absent key.

    Raises
    ------
    ValueError
        Anything else, naming ``key``.
    """
    value = run_config.get(key, "")
    if value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{key}: expected an integer >= 1, or "" (none), got {value!r}')
    return value


def num_rounds(run_config: Mapping[str, Any]) -> int:
    """Return the rounds to run: ``ceil(time_steps / tau)`` if ``time_steps`` is set.

    Otherwise ``rounds``.

    Examples
    --------
    >>> num_rounds({"time_steps": 1280, "tau": 32, "rounds": 3}), num_rounds({"rounds": 3})
    (40, 3)
    """
    steps = optional_count(run_config, "time_steps")
    if steps is not None:
        return math.ceil(steps / int(run_config["tau"]))
    return int(run_config["rounds"])


def output_dir(run_config: Mapping[str, Any]) -> Path:
    """Return the results folder: ``output_dir``, or ``outputs/<date-time>`` when empty.

    A relative path is taken from the current directory, which under
    ``flwr run`` is where the local SuperLink was started; prefer an absolute path.
    """
    name = str(run_config.get("output_dir", ""))
    if not name:
        name = str(Path("outputs", datetime.now().strftime("%Y%m%d-%H%M%S")))
    return Path(name).expanduser().absolute()


def write_result(folder: Path, result: Result, summary: Mapping[str, Any]) -> None:
    """Write ``results.json``: the per-round metrics of Flower's ``Result`` and the summary."""

    def rounds(metrics: Mapping[int, Any]) -> dict[str, dict[str, Any]]:
        return {str(r): dict(m.items()) for r, m in sorted(metrics.items())}

    def plain(value: Any) -> Any:
        return value.tolist() if hasattr(value, "tolist") else value

    data = {
        "summary": {key: plain(value) for key, value in summary.items()},
        "train_metrics_clientapp": rounds(result.train_metrics_clientapp),
        "evaluate_metrics_clientapp": rounds(result.evaluate_metrics_clientapp),
        "evaluate_metrics_serverapp": rounds(result.evaluate_metrics_serverapp),
    }
    (folder / "results.json").write_text(json.dumps(data, indent=1) + "\n")


def read_history(folder: str | Path) -> list[dict[str, float]]:
    """Return the rows of ``history.csv`` in ``folder`` as floats (empty cells: NaN)."""
    with (Path(folder) / "history.csv").open() as file:
        return [
            {k: float(v) if v != "" else float("nan") for k, v in row.items()}
            for row in csv.DictReader(file)
        ]


def _merged(common: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(common)
    for key, value in run.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def paper_run_config(
    common: Mapping[str, Any], run: Mapping[str, Any]
) -> dict[str, bool | int | float | str]:
    """Return the run config of one run (one curve) of a ``baselines/paper/*.yaml`` figure.

    The YAML's keys flattened (``hubs.count``, ``rates.values``...), lists as
    comma-separated strings, null values and the settings this app does not
    have (``simulation.backend``, ``eval.hubs``...) left out. ``hubs.count``
    and ``hubs.workers`` are always there (default.yaml's 3 and 4 if absent).

    Examples
    --------
    >>> cfg = paper_run_config({"tau": 8, "hubs": {"count": 2, "workers": 3}},
    ...                        {"q": 4, "hubs": {"graph": "path"}, "eval": {"hubs": True}})
    >>> cfg
    {'hubs.count': 2, 'hubs.workers': 3, 'tau': 8, 'q': 4, 'hubs.graph': 'path'}
    """
    flat = {"hubs.count": 3, "hubs.workers": 4, **dotted_keys(_merged(common, run))}
    if isinstance(flat["hubs.workers"], list):
        flat["hubs.count"] = len(flat["hubs.workers"])
    return {
        key: ",".join(str(v) for v in flat[key]) if isinstance(flat[key], list) else flat[key]
        for key in APP_KEYS
        if flat.get(key) is not None
    }


def config_name(label: str) -> str:
    """Return a file name for a run label.

    Examples
    --------
    >>> config_name("10% at 0.1, 90% at 0.6")
    '10pct_at_0_1_90pct_at_0_6'
    >>> config_name("MLL-SGD q=4 tau=8")
    'mll_sgd_q4_tau8'
    """
    text = label.lower().replace("%", "pct").replace("=", "").replace("..", "_to_")
    words = "".join(c if c.isalnum() else " " for c in text).split()
    return "_".join(words)


def to_toml(values: Mapping[str, bool | int | float | str], header: str = "") -> str:
    """Return flat ``key = value`` TOML lines (strings and dotted keys quoted, booleans lowercase).

    Examples
    --------
    >>> print(to_toml({"hubs.count": 2, "tau": 4, "hubs.graph": "path"}), end="")
    "hubs.count" = 2
    tau = 4
    "hubs.graph" = "path"
    """

    def literal(value: bool | int | float | str) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return json.dumps(value) if isinstance(value, str) else repr(value)

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def key(name: str) -> str:
        return json.dumps(name) if "." in name else name

    body = [f"{key(k)} = {literal(v)}" for k, v in values.items()]
    return "\n".join([*lines, *body]) + "\n"
