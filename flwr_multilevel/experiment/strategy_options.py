"""The ``strategy.*`` keys: a Flower strategy by name, and its options checked against it.

An option must be a scalar keyword of the strategy's constructor, of its
annotated type, within the range of :data:`OPTION_RANGES`.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.ranges import flag, integer, number, show, text

OptionCheck = Callable[[str, Any], Any]
OPTION_RANGES: dict[str, OptionCheck] = {
    "fraction_train": lambda k, v: number(k, v, 0, 1, low_open=True),
    "fraction_evaluate": lambda k, v: number(k, v, 0, 1, low_open=True),
    "min_train_nodes": lambda k, v: integer(k, v, 0),
    "min_evaluate_nodes": lambda k, v: integer(k, v, 0),
    "min_available_nodes": lambda k, v: integer(k, v, 0),
    "proximal_mu": lambda k, v: number(k, v, 0),
    "eta": lambda k, v: number(k, v, 0, low_open=True),
    "eta_l": lambda k, v: number(k, v, 0, low_open=True),
    "tau": lambda k, v: number(k, v, 0, low_open=True),
    "beta_1": lambda k, v: number(k, v, 0, 1, high_open=True),
    "beta_2": lambda k, v: number(k, v, 0, 1, high_open=True),
    "server_learning_rate": lambda k, v: number(k, v, 0, low_open=True),
    "server_momentum": lambda k, v: number(k, v, 0, 1, high_open=True),
    "beta": lambda k, v: number(k, v, 0, 0.5, high_open=True),  # FedTrimmedAvg's cut
    "num_malicious_nodes": lambda k, v: integer(k, v, 0),
    "num_nodes_to_select": lambda k, v: integer(k, v, 1),
    "q": lambda k, v: number(k, v, 0),
    "client_learning_rate": lambda k, v: number(k, v, 0, low_open=True),
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
