"""Experiment configuration: the shipped default, files, overrides and validation."""

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError

CHOICES = {
    "weighting": ("equal", "data_size"),
    "simulation.backend": ("ray", "inprocess"),
    "simulation.device": ("cpu", "cuda", "auto"),
}


def default_config() -> DictConfig:
    """Return the documented default configuration shipped with the package."""
    text = resources.files("flwr_multilevel").joinpath("default.yaml").read_text()
    return OmegaConf.create(text)  # type: ignore[return-value]


def struct(cfg: DictConfig) -> DictConfig:
    """Make ``cfg`` reject unknown keys (except a strategy's keyword arguments)."""
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.strategy.options, False)  # any strategy keyword
    return cfg


def merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    """Return ``base`` merged with ``other``; errors name the key and ``source``."""
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(
            str(key), f"unknown key in {source} (`flwr-multilevel config` lists every key)"
        ) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(str(key), f"bad value in {source}") from None


def num_rounds(cfg: DictConfig) -> int:
    """Return the rounds a config runs: ``ceil(time_steps / tau)`` if set, else ``rounds``."""
    if cfg.time_steps is not None:
        return -(-int(cfg.time_steps) // int(cfg.tau))
    return int(cfg.rounds)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Return the default config, merged with a YAML file and ``key=value`` overrides.

    Parameters
    ----------
    path : str | Path | None (default: None)
        YAML file with any subset of the default keys.
    overrides : Sequence[str] (default: ())
        Dotted overrides such as ``hubs.count=5`` (values parsed as YAML).

    Returns
    -------
    DictConfig
        The merged config; call :func:`validate` before use.

    Raises
    ------
    ConfigError
        Unreadable file, an override without ``=``, or an unknown key.
    """
    cfg = struct(default_config())
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError("config", f"expected a YAML file, {str(path)!r} does not exist")
        try:
            loaded = OmegaConf.load(file)
        except Exception as err:  # pylint: disable=broad-except
            raise ConfigError(
                "config", f"{file} is not valid YAML ({type(err).__name__})"
            ) from None
        cfg = merge(cfg, loaded, str(file))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Return ``cfg`` merged with dotted ``key=value`` overrides (values parsed as YAML).

    Raises
    ------
    ConfigError
        An override without ``=``, a value that does not parse, or an unknown key.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "expected key=value")
        key, _, _ = item.partition("=")
        try:
            dotted = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException:
            raise ConfigError(key, f"could not parse the value of {item!r}") from None
        cfg = merge(cfg, dotted, f"override {item!r}")
    return cfg


def from_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """Return the config of a Flower ``run_config`` (flattened ``a.b`` keys).

    Keys follow the YAML (``hubs.count``, ``batch_size``); list values come as
    comma-separated strings (``hubs.workers = "2,3,4"``).
    """
    nested: dict[str, Any] = {}
    for key, value in run_config.items():
        *parents, leaf = str(key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None if value == "" else value  # TOML has no null
    return merge(struct(default_config()), nested, "run_config")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key)


def _int(cfg: DictConfig, key: str, minimum: int) -> int:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _positive(cfg: DictConfig, key: str) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, f"expected a number > 0, got {value!r}")
    return float(value)


def int_list(key: str, value: Any) -> int | list[int]:
    """Return an int or a list of ints from an int, a list or a ``"2,3,4"`` string."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(key, f"expected comma-separated integers, got {value!r}") from None
    if OmegaConf.is_list(value):
        return list(value)
    return value  # type: ignore[no-any-return]


def validate(cfg: DictConfig) -> DictConfig:
    """Check every scalar key of a config; return it with interpolations resolved.

    Network keys (hubs, rates, graph, mixing) are checked when the network
    is built (``flwr_multilevel.experiment.prepare``), data keys when the data
    set is loaded.

    Raises
    ------
    ConfigError
        Naming the first key at fault and what was expected.
    """
    for key in ("rounds", "tau", "q", "batch_size", "hubs.count"):
        _int(cfg, key, 1)
    _int(cfg, "seed", 0)
    _int(cfg, "eval.every", 0)
    _int(cfg, "data.shards_per_worker", 1)
    for key in ("time_steps", "max_time_slots", "eval.train_examples"):
        if _get(cfg, key) is not None:
            _int(cfg, key, 1)
    _positive(cfg, "lr")
    _positive(cfg, "data.alpha")
    _positive(cfg, "simulation.cpus_per_worker")
    _positive(cfg, "simulation.timeout")
    gpus = _get(cfg, "simulation.gpus_per_worker")
    if isinstance(gpus, bool) or not isinstance(gpus, int | float) or not 0 <= gpus <= 1:
        raise ConfigError(
            "simulation.gpus_per_worker", f"expected a number in [0, 1], got {gpus!r}"
        )
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ConfigError(key, f"expected one of {', '.join(allowed)}, got {_get(cfg, key)!r}")
    for key in ("eval.train_loss", "eval.hubs", "overwrite", "wait_for_slowest"):
        if not isinstance(_get(cfg, key), bool):
            raise ConfigError(key, f"expected true or false, got {_get(cfg, key)!r}")
    if not isinstance(cfg.strategy.name, str):
        raise ConfigError(
            "strategy.name", f"expected a strategy class name, got {cfg.strategy.name!r}"
        )
    if not OmegaConf.is_dict(cfg.strategy.options):
        raise ConfigError("strategy.options", "expected a mapping of keyword arguments")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError("config", f"could not resolve interpolations ({err})") from None
    return cfg
