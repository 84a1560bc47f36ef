"""Experiment configuration: the shipped default, files and overrides, validated.

Every entry point (``flwr-multilevel run|config|theory|compare`` and ``flwr run .``)
goes through :func:`validate` and the typed schema of :mod:`flwr_multilevel.experiment.schema`.
Interpolations (``${...}``) are refused wherever they appear, never resolved.

The typed default and merging into it (:mod:`flwr_multilevel.experiment.merge`)
and Flower run configs (:mod:`flwr_multilevel.experiment.run_config`) are
importable from here too.
"""

import math
from collections.abc import Mapping, Sequence
from logging import WARNING
from pathlib import Path
from typing import Any, cast

from flwr.common.logger import log
from omegaconf import DictConfig, ListConfig, OmegaConf

from flwr_multilevel.engines.support import check_supported
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment import schema
from flwr_multilevel.experiment.merge import (  # noqa: F401  # re-exported
    default_config,
    merge,
    refuse_interpolations,
    struct,
)
from flwr_multilevel.experiment.ranges import (
    MAX_WORKERS_PER_HUB,
    choice,
    flag,
    float_list,
    integer,
    number,
    path_text,
    plain,
    ray_address,
    show,
)
from flwr_multilevel.experiment.run_config import (  # noqa: F401  # re-exported
    NULLABLE,
    flwr_run_config,
    from_run_config,
    to_run_config,
)
from flwr_multilevel.experiment.schema import (
    BACKENDS,
    DATASETS,
    DEVICES,
    DISTRIBUTIONS,
    GRAPHS,
    MAX_CONSTANT,
    MIXINGS,
    MODELS,
    PARTITIONS,
    WEIGHTINGS,
)
from flwr_multilevel.experiment.strategy_options import check_hub_sizes, check_strategy
from flwr_multilevel.model.hierarchy import hub_sizes
from flwr_multilevel.model.lists import number_list

MAX_FILE_BYTES = 1_000_000  # config, comparison, graph and matrix files
MAX_ROUNDS = 10**7  # of `rounds`, and of the rounds `time_steps` asks for


def _read_yaml_file(path: str | Path, key: str) -> Any:
    """Return the parsed contents of a small YAML file (unresolved)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(key, f"expected a YAML file, {str(path)!r} does not exist")
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(key, f"{file}: expected a YAML file under {MAX_FILE_BYTES} bytes")
        text = file.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(key, f"{file} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{file} is not a text file") from None
    try:
        return OmegaConf.create(text) if text.strip() else OmegaConf.create({})
    except Exception as err:  # pylint: disable=broad-except  # any YAML or omegaconf error
        raise ConfigError(key, f"{file} is not valid YAML ({type(err).__name__})") from None


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
        The merged, typed config; call :func:`validate` before use.

    Raises
    ------
    ConfigError
        Unreadable file, an override without ``=``, an unknown key or a wrong type.

    Examples
    --------
    >>> load_config(None, ["tau=8"]).tau
    8
    """
    cfg = default_config()
    if path is not None:
        loaded = _read_yaml_file(path, "config")
        if not isinstance(loaded, DictConfig):
            raise ConfigError("config", f"{path}: expected a mapping of config keys")
        cfg = merge(cfg, loaded, str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Return ``cfg`` merged with dotted ``key=value`` overrides (values parsed as YAML).

    Raises
    ------
    ConfigError
        An override without ``=``, a value that does not parse, or an unknown key.
    """
    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(item[:80] or "override", "expected key=value")
        try:
            dotted = OmegaConf.from_dotlist([item])
        except Exception:  # pylint: disable=broad-except  # YAML parser or omegaconf errors
            raise ConfigError(key[:80], f"could not parse the value of {item[:120]!r}") from None
        cfg = merge(cfg, dotted, f"override {item[:120]!r}")
    return cfg


def checked_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """Return the validated config of a ``flwr run`` (for the ServerApp), output folder planned.

    A ConfigError is logged as one line (``flwr-multilevel: error: ...``) before
    it is raised, so the reason leads the ServerApp's log.
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.run.results import plan_output_dir
    from flwr_multilevel.strategies.one_line import fail_in_one_line

    try:
        cfg = validate(from_run_config(run_config))
        cfg.output_dir = str(plan_output_dir(cfg.output_dir, bool(cfg.overwrite)))
        return cfg
    except ConfigError as err:
        raise fail_in_one_line(err) from None


# ---- validation ----------------------------------------------------------------------------


def num_rounds(cfg: DictConfig) -> int:
    """Return the rounds a config runs: ``ceil(time_steps / tau)`` if set, else ``rounds``."""
    if cfg.time_steps is not None:
        return -(-int(cfg.time_steps) // int(cfg.tau))
    return int(cfg.rounds)


def _typed(cfg: Any) -> DictConfig:
    """Return ``cfg`` if it follows the schema, else the default merged with it."""
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is schema.Config:
        return cfg
    if not isinstance(cfg, DictConfig | Mapping):
        raise ConfigError("config", f"expected a mapping of config keys, got {type(cfg).__name__}")
    return merge(default_config(), cfg, "config")


def _check_sizes(cfg: DictConfig) -> None:
    """Check ``hubs.workers`` against ``hubs.count``; a string or a single count becomes a list."""
    workers = plain(cfg.hubs.workers)
    for count in number_list("hubs.workers", workers, int):
        integer("hubs.workers", count, 1, MAX_WORKERS_PER_HUB)
    sizes = hub_sizes(cfg.hubs.count, workers)
    cfg.hubs.workers = workers if isinstance(workers, int) else list(sizes)


def _check_rates(cfg: DictConfig) -> None:
    rates = cfg.rates
    choice("rates.distribution", rates.distribution, DISTRIBUTIONS)
    for key in ("p", "low", "high", "p_slow", "p_fast"):
        number(f"rates.{key}", rates[key], 0, 1, low_open=True)
    number("rates.slow_fraction", rates.slow_fraction, 0, 1)
    if rates.low > rates.high:
        raise ConfigError("rates.low", f"expected low <= high ({rates.high}), got {rates.low}")
    rates["values"] = float_list("rates.values", rates["values"])
    if rates.distribution == "explicit" and not rates["values"]:
        raise ConfigError("rates.values", "expected one rate per worker for 'explicit'")


def _check_names(cfg: DictConfig) -> None:
    choice("weighting", cfg.weighting, WEIGHTINGS)
    choice("data.name", cfg.data.name, DATASETS)
    choice("data.partition", cfg.data.partition, PARTITIONS)
    choice("model.name", cfg.model.name, MODELS)
    choice("simulation.backend", cfg.simulation.backend, BACKENDS)
    choice("hub.missing", cfg.hub.missing, ("stay", "renormalize"))
    choice("simulation.device", cfg.simulation.device, DEVICES)
    for key, names in (("hubs.graph", GRAPHS), ("hubs.mixing", MIXINGS)):
        value = OmegaConf.select(cfg, key)
        if value not in names and not Path(path_text(key, value)).is_file():
            raise ConfigError(
                key,
                f"expected one of {', '.join(names)} or an existing file, got {show(value)}",
            )
    path_text("data.root", cfg.data.root)
    if cfg.output_dir is not None:
        cfg.output_dir = path_text("output_dir", cfg.output_dir) if cfg.output_dir else None


def _check_deploy(cfg: DictConfig) -> None:
    """Check the bounds of ``deploy.*``: seconds > 0 (``run_timeout`` may be null)."""
    dep = cfg.deploy
    for key in ("gossip_timeout", "peer_wait", "discovery_timeout", "start_timeout"):
        number(f"deploy.{key}", dep[key], 0, 1e7, low_open=True)
    number("deploy.superlink_timeout", dep.superlink_timeout, 0, 1e7, low_open=True)
    if dep.run_timeout is not None:
        number("deploy.run_timeout", dep.run_timeout, 0, 1e9, low_open=True)
    flag("deploy.strict", dep.strict)
    if dep.peer_wait < dep.gossip_timeout:
        raise ConfigError(
            "deploy.peer_wait",
            f"expected at least deploy.gossip_timeout ({dep.gossip_timeout:g} s): a hub waits "
            f"longer for a neighbour that is alive than for one it cannot reach, got "
            f"{dep.peer_wait:g}",
        )


def validate(cfg: DictConfig) -> DictConfig:
    """Check every key of a config against the schema; return it, lists normalised.

    Files (graph, mixing matrix) are read and data sets loaded later
    (``experiment.prepare``); nothing is resolved, read or written here.
    Values that are legal but almost surely wrong are logged, one
    ``WARNING`` line each (:func:`warnings_of`).

    Raises
    ------
    ConfigError
        Naming the first key at fault and what was expected; also a value
        that ``simulation.backend`` does not run
        (:func:`flwr_multilevel.engines.support.check_supported`).

    Examples
    --------
    >>> validate(load_config(None, ["hubs.workers=2,3", "hubs.count=2"])).hubs.workers
    [2, 3]
    """
    cfg = _typed(cfg)
    refuse_interpolations(cfg, "config")
    integer("seed", cfg.seed, 0, 2**32 - 1)
    for key in ("rounds", "tau", "q", "batch_size"):
        integer(key, cfg[key], 1, MAX_ROUNDS)
    integer("hubs.count", cfg.hubs.count, 1, 10_000)
    for key in ("time_steps", "max_time_slots"):
        if cfg[key] is not None:
            integer(key, cfg[key], 1, 10**12)
    if cfg.time_steps is not None and num_rounds(cfg) > MAX_ROUNDS:
        raise ConfigError(
            "time_steps",
            f"expected at most {MAX_ROUNDS * cfg.tau} ({MAX_ROUNDS} rounds of tau={cfg.tau}), "
            f"got {cfg.time_steps}",
        )
    flag("wait_for_slowest", cfg.wait_for_slowest)
    flag("overwrite", cfg.overwrite)
    number("lr", cfg.lr, 0, 1e3, low_open=True)
    _check_sizes(cfg)
    number("hubs.edge_probability", cfg.hubs.edge_probability, 0, 1, low_open=True)
    _check_rates(cfg)
    _check_names(cfg)
    number("data.alpha", cfg.data.alpha, 0, 1e6, low_open=True)
    integer("data.shards_per_worker", cfg.data.shards_per_worker, 1, 10**6)
    integer("eval.every", cfg.eval.every, 0, 10**12)
    if cfg.eval.train_examples is not None:
        integer("eval.train_examples", cfg.eval.train_examples, 1, 10**9)
    flag("eval.train_loss", cfg.eval.train_loss)
    flag("eval.hubs", cfg.eval.hubs)
    sim = cfg.simulation
    number("simulation.cpus_per_worker", sim.cpus_per_worker, 0, 1024, low_open=True)
    number("simulation.gpus_per_worker", sim.gpus_per_worker, 0, 1)
    number("simulation.timeout", sim.timeout, 0, 1e7, low_open=True)
    integer("simulation.threads", sim.threads, 0, 1024)
    flag("simulation.ray_groups", sim.ray_groups)
    ray_address("simulation.ray_address", sim.ray_address)
    if cfg.hub.clip_norm is not None:
        number("hub.clip_norm", cfg.hub.clip_norm, 0, 1e12, low_open=True)
    number("hub.min_replies", cfg.hub.min_replies, 0, 1)
    integer("hub.max_failed_rounds", cfg.hub.max_failed_rounds, 0, 10**9)
    _check_deploy(cfg)
    for name in ("L", "sigma2", "beta", "f_gap"):
        if cfg.theory[name] is not None:
            number(f"theory.{name}", cfg.theory[name], 0, MAX_CONSTANT, low_open=name == "L")
    if not isinstance(cfg.strategy.name, str):
        raise ConfigError(
            "strategy.name", f"expected a strategy name, got {show(cfg.strategy.name)}"
        )
    options = OmegaConf.to_container(cfg.strategy.options, resolve=False)
    assert isinstance(options, dict)
    check_strategy(cfg.strategy.name, cast(dict[str, Any], options))
    workers = cfg.hubs.workers
    sizes = list(workers) if isinstance(workers, list | ListConfig) else [workers] * cfg.hubs.count
    check_hub_sizes(cfg.strategy.name, cast(dict[str, Any], options), sizes)
    check_supported(cfg)  # what simulation.backend does not run is refused here, before any work
    for text in warnings_of(cfg):
        log(WARNING, "flwr-multilevel: warning: %s", text)
    return cfg


def warnings_of(cfg: DictConfig) -> list[str]:
    """Return one line for each value that is legal but almost surely wrong.

    Examples
    --------
    >>> warnings_of(load_config(None, ["lr=50"]))
    ['lr: 50 is a very large SGD step size; training will likely diverge in the first rounds']
    """
    found = []
    if cfg.lr > 10:
        found.append(
            f"lr: {cfg.lr:g} is a very large SGD step size; "
            "training will likely diverge in the first rounds"
        )
    rounds = num_rounds(cfg)
    if cfg.hubs.count > 1 and rounds < cfg.q:
        found.append(f"q: the hubs never gossip ({rounds} rounds, q={cfg.q}); they train apart")
    if cfg.time_steps is not None and cfg.time_steps % cfg.tau:
        found.append(
            f"time_steps: {cfg.time_steps} is not a multiple of tau={cfg.tau}; "
            f"{rounds * cfg.tau} time steps are run"
        )
    if cfg.simulation.timeout < 5:
        found.append(
            f"simulation.timeout: {cfg.simulation.timeout:g} s is short; replies will miss rounds"
        )
    if cfg.data.partition == "dirichlet" and cfg.data.alpha > 1e3:
        found.append(f"data.alpha: {cfg.data.alpha:g} makes the Dirichlet split practically iid")
    fraction = cfg.strategy.options.get("fraction_train", 1.0)
    if isinstance(fraction, float | int) and math.isfinite(fraction) and fraction < 1:
        found.append(
            f"strategy.options.fraction_train: {fraction:g} trains a sample of each hub's "
            "workers per round, which MLL-SGD's analysis does not cover"
        )
    return found
