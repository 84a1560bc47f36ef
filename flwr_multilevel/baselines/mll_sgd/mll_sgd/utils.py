"""Run-config helpers and the results folder of the baseline."""

import csv
import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from flwr.serverapp.strategy import Result

from flwr_multilevel.model.rates import operating_rates


def hub_sizes(run_config: Mapping[str, Any]) -> list[int]:
    """Return the workers of each hub from ``hubs`` (``"3,3,3"``, or one integer).

    Raises
    ------
    ValueError
        ``hubs`` is not a list of positive integers.

    Examples
    --------
    >>> hub_sizes({"hubs": "2,3"})
    [2, 3]
    """
    value = run_config["hubs"]
    try:
        sizes = [int(value)] if isinstance(value, int) else [int(v) for v in value.split(",")]
    except (AttributeError, ValueError):
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"hubs: expected workers per hub such as '3,3,3', got {value!r}")
    return sizes


def num_workers(run_config: Mapping[str, Any]) -> int:
    """Return the number of workers N (one SuperNode each)."""
    return sum(hub_sizes(run_config))


def num_rounds(run_config: Mapping[str, Any]) -> int:
    """Return the rounds to run: ``ceil(time-steps / tau)`` if ``time-steps`` > 0.

    Otherwise ``num-server-rounds``.

    Examples
    --------
    >>> num_rounds({"time-steps": 1280, "tau": 32, "num-server-rounds": 3})
    40
    """
    steps = int(run_config.get("time-steps", 0))
    if steps > 0:
        return math.ceil(steps / int(run_config["tau"]))
    return int(run_config["num-server-rounds"])


def worker_rates(run_config: Mapping[str, Any]) -> list[float]:
    """Return one operating rate ``p_i`` per worker, from the ``rates-*`` keys.

    Raises
    ------
    ValueError
        A bad distribution or rate (a ``ConfigError`` naming the key).

    Examples
    --------
    >>> worker_rates({"hubs": "2", "rates-distribution": "explicit", "rates-values": "1,0.5"})
    [1.0, 0.5]
    """
    return operating_rates(
        num_workers(run_config),
        str(run_config.get("rates-distribution", "fixed")),
        seed=int(run_config.get("seed", 0)),
        p=float(run_config.get("rates-p", 1.0)),
        low=float(run_config.get("rates-low", 0.1)),
        high=float(run_config.get("rates-high", 1.0)),
        slow_fraction=float(run_config.get("rates-slow-fraction", 0.1)),
        p_slow=float(run_config.get("rates-p-slow", 0.6)),
        p_fast=float(run_config.get("rates-p-fast", 0.9)),
        values=str(run_config.get("rates-values", "")) or None,
    ).tolist()


def output_dir(run_config: Mapping[str, Any]) -> Path:
    """Return the results folder: ``output-dir``, or ``outputs/<date-time>`` when empty.

    A relative path is taken from the current directory, which under
    ``flwr run`` is where the local SuperLink was started; prefer an absolute path.
    """
    name = str(run_config.get("output-dir", ""))
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


def _join(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def paper_run_config(
    common: Mapping[str, Any], run: Mapping[str, Any]
) -> dict[str, bool | int | float | str]:
    """Return the run config of one run (one curve) of a ``baselines/paper/*.yaml`` figure.

    ``common`` and ``run`` use flwr-multilevel's YAML keys (``hubs.count``,
    ``batch_size``...); the result uses this app's keys. Settings this app
    does not have (``simulation.*``, ``eval.hubs``) are left out.

    Examples
    --------
    >>> cfg = paper_run_config({"tau": 8, "hubs": {"count": 2, "workers": 3}},
    ...                        {"q": 4, "hubs": {"graph": "path"}})
    >>> cfg["hubs"], cfg["hub-graph"], cfg["tau"], cfg["q"]
    ('3,3', 'path', 8, 4)
    """
    cfg = _merged(common, run)
    hubs, rates = cfg.get("hubs", {}), cfg.get("rates", {})
    data, evaluation = cfg.get("data", {}), cfg.get("eval", {})
    workers = hubs.get("workers", 4)
    out: dict[str, Any] = {
        "hubs": _join(workers if isinstance(workers, list) else [workers] * hubs.get("count", 3)),
        "hub-graph": hubs.get("graph"),
        "tau": cfg.get("tau"),
        "q": cfg.get("q"),
        "wait-for-slowest": cfg.get("wait_for_slowest"),
        "time-steps": cfg.get("time_steps"),
        "max-time-slots": cfg.get("max_time_slots"),
        "rates-distribution": rates.get("distribution"),
        "rates-p": rates.get("p"),
        "rates-low": rates.get("low"),
        "rates-high": rates.get("high"),
        "rates-values": _join(rates["values"]) if "values" in rates else None,
        "weighting": {"data_size": "data-size"}.get(cfg.get("weighting", ""), cfg.get("weighting")),
        "lr": cfg.get("lr"),
        "batch-size": cfg.get("batch_size"),
        "seed": cfg.get("seed"),
        "dataset": data.get("name"),
        "data-root": data.get("root"),
        "partition": data.get("partition"),
        "partition-alpha": data.get("alpha"),
        "partition-shards": data.get("shards_per_worker"),
        "model": cfg.get("model", {}).get("name"),
        "eval-every": evaluation.get("every"),
        "eval-train-examples": evaluation.get("train_examples"),
    }
    return {key: value for key, value in out.items() if value is not None}


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
    """Return flat ``key = value`` TOML lines (strings quoted, booleans lowercase)."""

    def literal(value: bool | int | float | str) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return json.dumps(value) if isinstance(value, str) else repr(value)

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join([*lines, *(f"{k} = {literal(v)}" for k, v in values.items())]) + "\n"
