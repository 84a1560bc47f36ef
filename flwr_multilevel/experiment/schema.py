"""The typed schema of an experiment config: one dataclass per section, and every range.

The dataclasses are omegaconf structured configs: a value of the wrong type is
refused when it is merged in (``seed=abc``, ``output_dir=[1,2]``), and
:func:`check` then holds every value to its range. ``flwr_multilevel/default.yaml``
documents the same keys with the same defaults (a test compares them).
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from flwr_multilevel.errors import ConfigError

# the names the modules accept (tests compare them with the modules' own constants)
GRAPHS = ("complete", "ring", "path", "star", "erdos_renyi")
MIXINGS = ("auto", "metropolis", "complete")
DISTRIBUTIONS = ("fixed", "uniform", "two_level", "explicit")
DATASETS = ("digits", "mnist", "fashion_mnist", "emnist_letters", "cifar10")
PARTITIONS = ("iid", "unequal", "dirichlet", "shards")
MODELS = ("logreg", "cnn", "resnet18")
BACKENDS = ("ray", "inprocess", "batched")
DEVICES = ("cpu", "cuda", "auto")
WEIGHTINGS = ("equal", "data_size")
MAX_WORKERS_PER_HUB = 10_000
MAX_CONSTANT = 1e15  # theory constants: beyond this the bound's products overflow


@dataclass
class Hubs:
    """``hubs.*``: the hub graph and its workers."""

    count: int = 3
    workers: Any = 4  # int, list of ints, or "2,3,4"
    graph: str = "path"
    edge_probability: float = 0.5
    mixing: str = "auto"


@dataclass
class Rates:
    """``rates.*``: the operating rates p_i."""

    distribution: str = "uniform"
    p: float = 1.0
    low: float = 0.5
    high: float = 1.0
    slow_fraction: float = 0.1
    p_slow: float = 0.6
    p_fast: float = 0.9
    values: Any = None  # None, list of numbers, or "0.5,1.0"


@dataclass
class Data:
    """``data.*``: the data set and its partition."""

    name: str = "digits"
    root: str = "data"
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_worker: int = 2


@dataclass
class Model:
    """``model.*``."""

    name: str = "logreg"


@dataclass
class Strategy:
    """``strategy.*``: the Flower strategy at every hub and its keyword arguments."""

    name: str = "FedAvg"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hub:
    """``hub.*``: how every hub treats failed and hostile workers."""

    missing: str = "stay"
    clip_norm: float | None = None
    min_replies: float = 0.0
    max_failed_rounds: int = 5


@dataclass
class Eval:
    """``eval.*``: what is evaluated, and when."""

    every: int = 0
    train_loss: bool = True
    train_examples: int | None = 10000
    hubs: bool = False


@dataclass
class Simulation:
    """``simulation.*``: how the workers are run."""

    backend: str = "ray"
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    device: str = "cpu"
    timeout: float = 600.0
    threads: int = 0
    ray_groups: bool = True


@dataclass
class Theory:
    """``theory.*``: constants of Theorem 1."""

    L: float | None = None  # noqa: N815 (the paper's name)
    sigma2: float | None = None
    beta: float | None = None
    f_gap: float | None = None


@dataclass
class Config:
    """The whole experiment config (the schema of ``default.yaml``)."""

    seed: int = 0
    rounds: int = 60
    time_steps: int | None = None
    max_time_slots: int | None = None
    wait_for_slowest: bool = False
    tau: int = 4
    q: int = 2
    lr: float = 0.5
    batch_size: int = 16
    hubs: Hubs = field(default_factory=Hubs)
    rates: Rates = field(default_factory=Rates)
    weighting: str = "data_size"
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    strategy: Strategy = field(default_factory=Strategy)
    hub: Hub = field(default_factory=Hub)
    eval: Eval = field(default_factory=Eval)
    simulation: Simulation = field(default_factory=Simulation)
    theory: Theory = field(default_factory=Theory)
    output_dir: str | None = None
    overwrite: bool = False


# ---- ranges --------------------------------------------------------------------------------


def show(value: Any) -> str:
    """Return ``repr(value)``, cut to 80 characters (error messages stay one short line)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def integer(key: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]``; else raise ConfigError.

    Examples
    --------
    >>> integer("tau", 4, 1)
    4
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(key, f"expected an integer {span}, got {show(value)}")
    return int(value)


def number(
    key: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number in its interval; else raise.

    Examples
    --------
    >>> number("lr", 0.5, 0, low_open=True)
    0.5
    >>> number("lr", float("nan"), 0, low_open=True)
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: lr: expected a finite number > 0, got nan
    """
    real = isinstance(value, int | float) and not isinstance(value, bool)
    x = float(value) if real else math.nan
    fine = (
        math.isfinite(x)
        and (x > low if low_open else x >= low)
        and (x < high if high_open else x <= high)
    )
    if not fine:
        if high == math.inf:
            span = f"{'>' if low_open else '>='} {_fmt(low)}"
        else:
            span = (
                f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
            )
        raise ConfigError(key, f"expected a finite number {span}, got {show(value)}")
    return x


def choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``; else raise ConfigError."""
    if value not in allowed:
        raise ConfigError(key, f"expected one of {', '.join(allowed)}, got {show(value)}")
    return str(value)


def flag(key: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; else raise ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {show(value)}")
    return value


def text(key: str, value: Any) -> str:
    """Return ``value`` if it is a string; else raise ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {show(value)}")
    return value


def path_text(key: str, value: Any) -> str:
    """Return ``value`` if it can name a file: a string without NUL, parts <= 255 bytes."""
    text = str(value)
    if "\x00" in text or not text.strip():
        raise ConfigError(key, f"expected a file or folder name, got {show(value)}")
    parts = text.replace("\\", "/").split("/")
    if len(text.encode()) > 4000 or max(len(p.encode()) for p in parts) > 255:
        raise ConfigError(key, "expected a path of at most 4000 bytes and parts of at most 255")
    return text


def int_list(key: str, value: Any) -> int | list[int]:
    """Return an int or a list of ints from an int, a list or a ``"2,3,4"`` string.

    Examples
    --------
    >>> int_list("hubs.workers", "2, 3")
    [2, 3]
    """
    value = _plain(value)
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(
                key, f"expected comma-separated integers, got {show(value)}"
            ) from None
    if isinstance(value, list | tuple):
        return [integer(key, v, 1, MAX_WORKERS_PER_HUB) for v in value]
    return integer(key, value, 1, MAX_WORKERS_PER_HUB)


def float_list(key: str, value: Any) -> list[float] | None:
    """Return None, or a list of numbers from a number, a list or a ``"0.5,1"`` string."""
    value = _plain(value)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            items: list[Any] = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(key, f"expected comma-separated numbers, got {show(value)}") from None
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    return [number(key, v, 0, 1, low_open=True) for v in items]


# ---- strategy options ----------------------------------------------------------------------

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
