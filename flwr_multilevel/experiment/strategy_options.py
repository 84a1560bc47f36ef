"""The ``strategy.*`` keys: a Flower strategy by name, and its options checked against it.

An option must be a scalar keyword of the strategy's constructor, of its
annotated type, within the range of :data:`OPTION_RANGES`; and the rule must be
able to work with the workers of every hub (:func:`check_hub_sizes`).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.ranges import flag, integer, number, show, text

OptionCheck = Callable[[str, Any], Any]
MAX_RATE = 1e3  # step sizes and proximal terms: beyond it every update overflows (as `lr`)
OPTION_RANGES: dict[str, OptionCheck] = {
    "fraction_train": lambda k, v: number(k, v, 0, 1, low_open=True),
    "fraction_evaluate": lambda k, v: number(k, v, 0, 1, low_open=True),
    "min_train_nodes": lambda k, v: integer(k, v, 0),
    "min_evaluate_nodes": lambda k, v: integer(k, v, 0),
    "min_available_nodes": lambda k, v: integer(k, v, 0),
    "proximal_mu": lambda k, v: number(k, v, 0, MAX_RATE),
    "eta": lambda k, v: number(k, v, 0, MAX_RATE, low_open=True),
    "eta_l": lambda k, v: number(k, v, 0, MAX_RATE, low_open=True),
    "tau": lambda k, v: number(k, v, 0, 1e6, low_open=True),
    "beta_1": lambda k, v: number(k, v, 0, 1, high_open=True),
    "beta_2": lambda k, v: number(k, v, 0, 1, high_open=True),
    "server_learning_rate": lambda k, v: number(k, v, 0, MAX_RATE, low_open=True),
    "server_momentum": lambda k, v: number(k, v, 0, 1, high_open=True),
    "beta": lambda k, v: number(k, v, 0, 0.5, high_open=True),  # FedTrimmedAvg's cut
    "num_malicious_nodes": lambda k, v: integer(k, v, 0),
    "num_nodes_to_select": lambda k, v: integer(k, v, 1),
    "q": lambda k, v: number(k, v, 0, 100),  # QFedAvg raises losses to this power
    "client_learning_rate": lambda k, v: number(k, v, 0, MAX_RATE, low_open=True),
}
RESERVED_OPTIONS = ("weighted_by_key", "arrayrecord_key", "configrecord_key")


def _of_type(key: str, value: Any, kind: Any, what: str) -> Any:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(key, f"expected {what}, got {show(value)}")
    return value


TYPES: dict[str, OptionCheck] = {
    "float": lambda k, v: _of_type(k, v, int | float, "a finite number"),
    "int": lambda k, v: _of_type(k, v, int, "an integer"),
    "bool": flag,
    "str": lambda k, v: text(k, v),
}


def _kind(annotation: Any) -> str:
    """Return ``float``, ``int``, ``bool``, ``str`` or another name for a parameter's type."""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).split(" |")[0].strip("'\"")


def strategy_class(name: Any) -> type:
    """Return the class ``flwr.serverapp.strategy.<name>``; raise ConfigError if there is none."""
    # pylint: disable=import-outside-toplevel
    from flwr.serverapp import strategy as flwr_strategies

    cls = getattr(flwr_strategies, str(name), None) if isinstance(name, str) else None
    base = flwr_strategies.Strategy
    if not (isinstance(cls, type) and issubclass(cls, base)) or cls is base:
        known = [
            n
            for n in flwr_strategies.__all__
            if isinstance(getattr(flwr_strategies, n), type)
            and issubclass(getattr(flwr_strategies, n), base)
            and n != "Strategy"
            and not n.startswith("FedXgb")  # trees, refused by check_strategy
        ]
        raise ConfigError(
            "strategy.name",
            f"expected a strategy of flwr.serverapp.strategy, got {name!r}"
            f" (one of {', '.join(sorted(known))})",
        )
    return cls


def check_strategy(name: Any, options: Mapping[str, Any]) -> None:
    """Check ``options`` against the constructor of the Flower strategy ``name``.

    Every option must be a scalar keyword of the constructor, of its annotated
    type, within the range of :data:`OPTION_RANGES`; every required keyword
    must be given.

    Raises
    ------
    ConfigError
        ``strategy.name`` or ``strategy.options.<key>``, in one line.

    Examples
    --------
    >>> check_strategy("FedProx", {"proximal_mu": 0.1})
    >>> check_strategy("FedProx", {"proximal_mu": -1})
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: strategy.options.proximal_mu: expected a finite ...
    """
    import inspect  # pylint: disable=import-outside-toplevel

    cls = strategy_class(name)
    if cls.__name__.startswith("FedXgb"):
        raise ConfigError(
            "strategy.name",
            f"{name} combines XGBoost trees; MLL-SGD's hubs average model arrays "
            "(use FedAvg or another averaging strategy)",
        )
    params = {p.name: p for p in inspect.signature(cls).parameters.values() if p.name != "self"}
    kinds = {key: _kind(p.annotation) for key, p in params.items()}
    settable = sorted(k for k in params if kinds[k] in TYPES and k not in RESERVED_OPTIONS)
    for param in params.values():
        if param.default is inspect.Parameter.empty and kinds[param.name] not in TYPES:
            raise ConfigError(
                "strategy.name",
                f"{name} needs a {param.name} that a config cannot give (use it from Python)",
            )
        if param.default is inspect.Parameter.empty and param.name not in options:
            raise ConfigError(f"strategy.options.{param.name}", f"{name} needs this option")
    for key, value in options.items():
        field_key = f"strategy.options.{key}"
        if key in RESERVED_OPTIONS:
            raise ConfigError(field_key, "is set by MLL-SGD (see `weighting`), not by a config")
        if key not in params:
            raise ConfigError(field_key, f"expected a keyword of {name} ({', '.join(settable)})")
        kind = kinds[key]
        if kind not in TYPES:
            raise ConfigError(field_key, f"expected nothing; {name} takes a Python object here")
        if value is None and "None" in str(params[key].annotation):
            continue
        TYPES[kind](field_key, value)
        if key in OPTION_RANGES:
            OPTION_RANGES[key](field_key, value)


def _option(name: str, options: Mapping[str, Any], key: str) -> Any:
    """Return ``options[key]``, or the default of the strategy ``name``'s constructor."""
    import inspect  # pylint: disable=import-outside-toplevel

    if key in options:
        return options[key]
    param = inspect.signature(strategy_class(name)).parameters.get(key)
    return None if param is None else param.default


def check_hub_sizes(name: str, options: Mapping[str, Any], sizes: Sequence[int]) -> None:
    """Check that the rule ``name`` with ``options`` can work at every hub of ``sizes`` workers.

    Every hub's rule sees one input per worker (a missing worker as the hub
    model, with ``hub.missing=stay``), so the smallest hub decides:
    Krum and MultiKrum need ``n >= 2f + 3`` (f: ``num_malicious_nodes``),
    Bulyan ``n >= 4f + 3`` (else Flower skips every aggregation), MultiKrum
    ``num_nodes_to_select <= n``, and a ``min_*_nodes`` given in the options
    at most n (a hub would wait for nodes it does not have).

    Raises
    ------
    ConfigError
        ``strategy.options.<key>`` (``hubs.workers`` if no setting of the
        option fits), in one line, naming the smallest hub.

    Examples
    --------
    >>> check_hub_sizes("Krum", {"num_malicious_nodes": 1}, [5, 6])
    >>> check_hub_sizes("Krum", {"num_malicious_nodes": 1}, [5, 4])
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: strategy.options.num_malicious_nodes: expected Krum's ...
    """
    n = min(sizes)
    where = f"the smallest hub has {n} worker{'s' if n != 1 else ''}"
    for key in ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes"):
        value = options.get(key)
        if isinstance(value, int) and value > n:
            raise ConfigError(
                f"strategy.options.{key}", f"expected at most {n} ({where}), got {value}"
            )
    select = _option(name, options, "num_nodes_to_select")
    if name == "MultiKrum" and isinstance(select, int) and select > n:
        raise ConfigError(
            "strategy.options.num_nodes_to_select", f"expected at most {n} ({where}), got {select}"
        )
    f = _option(name, options, "num_malicious_nodes")
    if not isinstance(f, int):
        return
    need = {"Krum": (2, 3), "MultiKrum": (2, 3), "Bulyan": (4, 3)}.get(name)
    if need is not None and n < need[0] * f + need[1]:
        rule = f"n >= {need[0]}f + {need[1]}"
        if n < need[1]:  # too small for any f
            raise ConfigError(
                "hubs.workers",
                f"expected at least {need[1]} workers per hub for {name} ({rule}), got {n}",
            )
        raise ConfigError(
            "strategy.options.num_malicious_nodes",
            f"expected {name}'s {rule} at every hub ({where}: f <= {(n - need[1]) // need[0]}), "
            f"got {f}",
        )
