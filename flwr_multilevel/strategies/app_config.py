"""The run-config keys :meth:`MLLSGD.from_run_config` reads: ``default.yaml``'s, flattened.

A Flower app's ``[tool.flwr.app.config]`` (and ``flwr run --run-config``) names
MLL-SGD's settings with the dotted keys of ``flwr_multilevel/default.yaml``,
with the same meaning: ``"hubs.workers" = "3,3"``, ``tau = 4``,
``"rates.distribution" = "uniform"``... :data:`RUN_CONFIG_KEYS` maps each to the
:class:`~flwr_multilevel.strategies.MLLSGD` argument it sets; a key that is
absent leaves that argument's default (``rates``: every worker at 1). The app's
own keys (``num-server-rounds``, ``lr``, ``data.name``...) are not read.

TOML has neither lists nor null: a list is a comma-separated string (a single
value stands for every hub or worker), and ``""`` is null where default.yaml
allows it (``rates.values``, ``hub.clip_norm``). A run config comes from whoever
submits the run, so ``hubs.graph`` and ``hubs.mixing`` take names, never files.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import hub_sizes
from flwr_multilevel.model.mixing import MIXINGS
from flwr_multilevel.model.rates import DISTRIBUTIONS, operating_rates
from flwr_multilevel.model.topology import GRAPHS, hub_graph
from flwr_multilevel.protocol.keys import NUM_EXAMPLES


def dotted_keys(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return a nested mapping as one level of dotted keys (``default.yaml`` -> run config).

    Lists and other values are kept as they are.

    Examples
    --------
    >>> dotted_keys({"hubs": {"count": 2, "workers": [1, 2]}, "tau": 4})
    {'hubs.count': 2, 'hubs.workers': [1, 2], 'tau': 4}
    """
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            flat.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


RUN_CONFIG_KEYS: dict[str, str] = {  # dotted key -> the MLLSGD argument it sets
    "hubs.count": "hubs",
    "hubs.workers": "hubs",
    "hubs.graph": "graph",
    "hubs.edge_probability": "graph",
    "hubs.mixing": "mixing",
    "tau": "tau",
    "q": "q",
    "seed": "seed",
    "rates.distribution": "rates",
    "rates.p": "rates",
    "rates.low": "rates",
    "rates.high": "rates",
    "rates.slow_fraction": "rates",
    "rates.p_slow": "rates",
    "rates.p_fast": "rates",
    "rates.values": "rates",
    "weighting": "weights",
    "wait_for_slowest": "wait_for_slowest",
    "hub.missing": "missing",
    "hub.clip_norm": "clip_norm",
    "hub.min_replies": "min_replies",
    "hub.max_failed_rounds": "max_failed_rounds",
    "eval.every": "evaluate_every",
    "eval.hubs": "evaluate_hubs",
}
SECTIONS = ("hubs.", "rates.", "hub.")  # a key under these must be one of the table's
RENAMED = {"hubs": "hubs.workers", "hub-graph": "hubs.graph", "rates": "rates.values"}  # < 0.2
WEIGHTINGS = {"data_size": NUM_EXAMPLES, "equal": "equal"}  # weighting -> MLLSGD's weights
RATE_OPTIONS = ("p", "low", "high", "slow_fraction", "p_slow", "p_fast", "values")


def integer(key: str, value: Any, low: int) -> int:
    """Return ``value`` if it is an integer >= ``low``, else raise ConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, f"expected an integer >= {low}, got {value!r}")
    return value


def number(key: str, value: Any, low: float, high: float = math.inf) -> float:
    """Return ``value`` as a float if it is a finite number in ``[low, high]``."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or not low <= value <= high:
        span = (
            ""
            if low == -math.inf
            else f" >= {low:g}"
            if high == math.inf
            else f" in [{low:g}, {high:g}]"
        )
        raise ConfigError(key, f"expected a finite number{span}, got {value!r}")
    return float(value)


def positive_or_null(key: str, value: Any) -> float | None:
    """Return None for ``""`` (null), else ``value`` if it is a finite number > 0."""
    if value == "":
        return None
    if number(key, value, 0.0) == 0:
        raise ConfigError(key, f"expected a finite number > 0, got {value!r}")
    return float(value)


def flag(key: str, value: Any) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def name(allowed: tuple[str, ...] | Mapping[str, Any]) -> Callable[[str, Any], Any]:
    """Return a reader of one of the ``allowed`` names (mapped, for a mapping)."""

    def read(key: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(
                key, f"expected one of {', '.join(allowed)} (a name), got {str(value)[:60]!r}"
            )
        return allowed[value] if isinstance(allowed, Mapping) else value

    return read


READERS: dict[str, Callable[[str, Any], Any]] = {  # the keys that set one argument each
    "tau": lambda key, value: integer(key, value, 1),
    "q": lambda key, value: integer(key, value, 1),
    "seed": lambda key, value: integer(key, value, 0),
    "hubs.mixing": name(MIXINGS),
    "weighting": name(WEIGHTINGS),
    "wait_for_slowest": flag,
    "hub.missing": name(("stay", "renormalize")),
    "hub.clip_norm": positive_or_null,
    "hub.min_replies": lambda key, value: number(key, value, 0.0, 1.0),
    "hub.max_failed_rounds": lambda key, value: integer(key, value, 0),
    "eval.hubs": flag,
}


def hub_sizes_of(
    run_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> tuple[int, ...]:
    """Return the workers of each hub: the ``hubs`` argument, else ``hubs.workers`` (and count).

    Without ``hubs.count``, there are as many hubs as ``hubs.workers`` lists.

    Raises
    ------
    ConfigError
        No ``hubs.workers``, or a bad count, naming the key.

    Examples
    --------
    >>> hub_sizes_of({"hubs.count": 3, "hubs.workers": "4"}), hub_sizes_of({"hubs.workers": "2,3"})
    ((4, 4, 4), (2, 3))
    """
    if overrides and "hubs" in overrides:
        return hub_sizes(None, overrides["hubs"], keys=("hubs", "hubs"))
    if "hubs.workers" not in run_config:
        raise ConfigError(
            "hubs.workers",
            'expected the workers of each hub (such as "3,3"); the run config has none',
        )
    count = run_config.get("hubs.count")
    return hub_sizes(
        None if count is None else integer("hubs.count", count, 1), run_config["hubs.workers"]
    )


def _graph(run_config: Mapping[str, Any], num_hubs: int, seed: int) -> str | nx.Graph:
    """Return ``hubs.graph`` (checked on ``num_hubs`` hubs), drawn if it is ``erdos_renyi``."""
    kind = name(GRAPHS)("hubs.graph", run_config["hubs.graph"])
    p = run_config.get("hubs.edge_probability", 0.5)
    if kind == "erdos_renyi" and "hubs.edge_probability" in run_config:
        return hub_graph(kind, num_hubs, p=number("hubs.edge_probability", p, 0.0), seed=seed)
    hub_graph(kind, num_hubs, seed=seed)  # a ring of 2 hubs is refused here, naming the key
    return kind


def _rates(run_config: Mapping[str, Any], num_workers: int, seed: int) -> list[float]:
    """Return one rate per worker from ``rates.*``, as the engine draws them.

    Without ``rates.distribution`` the rates are ``explicit`` when
    ``rates.values`` is given, else ``fixed`` (at ``rates.p``, default 1).
    """
    options = {k: run_config[f"rates.{k}"] for k in RATE_OPTIONS if f"rates.{k}" in run_config}
    if options.get("values") == "":
        del options["values"]
    for key, value in options.items():
        if key != "values":
            number(f"rates.{key}", value, -math.inf)  # a type check; ranges: operating_rates
    default = "explicit" if "values" in options else "fixed"
    distribution = name(DISTRIBUTIONS)(
        "rates.distribution", run_config.get("rates.distribution", default)
    )
    return operating_rates(num_workers, distribution, seed=seed, **options).tolist()


def mllsgd_arguments(run_config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return the MLLSGD arguments of a run config, with ``overrides`` (keyword arguments) on top.

    The keys of an argument given in ``overrides`` are not read.

    Raises
    ------
    ConfigError
        A value of the wrong type or out of range, naming its dotted key; a
        key under ``hubs.``, ``rates.`` or ``hub.`` that is not in :data:`RUN_CONFIG_KEYS`.

    Examples
    --------
    >>> args = mllsgd_arguments({"hubs.workers": "2,2", "tau": 4, "lr": 0.1}, {})
    >>> args["hubs"], args["tau"], "lr" in args
    ((2, 2), 4, False)
    >>> mllsgd_arguments({"hubs.workers": "2", "rates.values": "0.8"}, {})["rates"]
    [0.8, 0.8]
    """
    for key in run_config:
        if key in RENAMED:
            raise ConfigError(str(key), f"renamed {RENAMED[key]} (default.yaml's keys)")
        if str(key).startswith(SECTIONS) and key not in RUN_CONFIG_KEYS:
            section = str(key).split(".")[0] + "."
            known = ", ".join(k for k in RUN_CONFIG_KEYS if k.startswith(section))
            raise ConfigError(str(key), f"not a key of MLL-SGD's run config ({known})")
    given = {k: v for k, v in run_config.items() if RUN_CONFIG_KEYS.get(k, "") not in overrides}
    args = {RUN_CONFIG_KEYS[k]: read(k, given[k]) for k, read in READERS.items() if k in given}
    merged = {**args, **overrides}
    seed = int(merged.get("seed", 0))
    args["hubs"] = sizes = hub_sizes_of(given, overrides)
    if "hubs.graph" in given:
        args["graph"] = _graph(given, len(sizes), seed)
    if any(str(key).startswith("rates.") for key in given):
        args["rates"] = _rates(given, sum(sizes), seed)
    if "eval.every" in given:
        tau, every = int(merged.get("tau", 1)), integer("eval.every", given["eval.every"], 0)
        if every % tau:
            raise ConfigError("eval.every", f"expected 0 or a multiple of tau={tau}, got {every}")
        args["evaluate_every"] = every // tau if every else int(merged.get("q", 1))
    return {**args, **overrides}
