"""Experiment configuration: the shipped default, files, overrides, run configs and validation.

Every entry point (``flwr-multilevel run|config|theory|compare`` and ``flwr run .``)
goes through :func:`validate` and the typed schema of :mod:`flwr_multilevel.experiment.schema`.
Interpolations (``${...}``) are refused wherever they appear, never resolved.

A Flower run config (``[tool.flwr.app.config]``, ``flwr run . --run-config``) holds
the same keys flattened (``hubs.count``); TOML has neither lists nor null, so a
list is a comma-separated string (``hubs.workers = "2,3,4"``), null is ``""`` and
``strategy.options`` is a string of ``key=value`` pairs (``"proximal_mu=0.1,eta=0.01"``).
"""

import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import is_dataclass
from importlib import resources
from logging import ERROR, WARNING
from pathlib import Path
from typing import Any, cast

import tomllib
import yaml
from flwr.common.logger import log
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from flwr_multilevel.engines.support import check_supported
from flwr_multilevel.errors import ConfigError
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
    choice,
    flag,
    integer,
    number,
    path_text,
)
from flwr_multilevel.flower_compat import (
    flatten_dict,
    fuse_dicts,
    parse_config_args,
    unflatten_dict,
)

from . import schema

int_list = schema.int_list  # kept here: experiment.py imports it from config
MAX_FILE_BYTES = 1_000_000  # config, comparison, graph and matrix files


def default_config() -> DictConfig:
    """Return the documented default configuration shipped with the package (typed).

    Examples
    --------
    >>> default_config().hubs.count
    3
    """
    text = resources.files("flwr_multilevel").joinpath("default.yaml").read_text()
    cfg = OmegaConf.merge(OmegaConf.structured(schema.Config), OmegaConf.create(text))
    return struct(cfg)  # type: ignore[arg-type]


def struct(cfg: DictConfig) -> DictConfig:
    """Make ``cfg`` reject unknown keys (except a strategy's keyword arguments)."""
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_struct(cfg.strategy.options, False)  # any strategy keyword
    return cfg


def refuse_interpolations(node: Any, source: str, prefix: str = "") -> None:
    """Raise ConfigError if any string in ``node`` holds an interpolation (``${...}``).

    Nothing is resolved: ``${oc.env:HOME}`` or ``${foo}`` are refused as they are.

    Examples
    --------
    >>> refuse_interpolations({"seed": "${foo}"}, "override")
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: seed: expected a plain value in override; ...
    """
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, Mapping):
        for key, value in node.items():
            if isinstance(key, str) and "${" in key:
                raise ConfigError(f"{prefix}{key}", f"expected a plain key in {source}")
            refuse_interpolations(value, source, f"{prefix}{key}.")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            refuse_interpolations(value, source, f"{prefix}{i}.")
    elif isinstance(node, str) and "${" in node:
        raise ConfigError(
            prefix.rstrip(".") or "config",
            f"expected a plain value in {source}; interpolations (${{...}}) are not supported",
        )


def _expected(key: str) -> str:
    """Describe what the schema expects at a dotted key."""
    cls: Any = schema.Config
    *parents, leaf = key.split(".")
    for part in parents:
        cls = typing.get_type_hints(cls).get(part) if is_dataclass(cls) else None
    hint = typing.get_type_hints(cls).get(leaf) if is_dataclass(cls) else None
    if is_dataclass(hint):
        return f"a mapping of {key}.* keys"
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    base = names.get(args[0], "a mapping") if args[0] is not Any else "a value"
    return base + (" or null" if type(None) in typing.get_args(hint) else "")


def _strict_bools(other: Any, source: str) -> None:
    """Refuse anything but true/false for a boolean key (omegaconf would take 1, -1, 'yes')."""
    plain = OmegaConf.to_container(other, resolve=False) if OmegaConf.is_config(other) else other

    def walk(node: Any, cls: Any, prefix: str) -> None:
        if not (isinstance(node, Mapping) and is_dataclass(cls)):
            return
        hints = typing.get_type_hints(cls)
        for key, value in node.items():
            hint = hints.get(str(key))
            if hint is bool and not isinstance(value, bool):
                raise ConfigError(
                    f"{prefix}{key}",
                    f"expected true or false in {source}, got {schema.show(value)}",
                )
            walk(value, hint, f"{prefix}{key}.")

    walk(plain, schema.Config, "")


def merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    """Return ``base`` merged with ``other``; errors name the key and ``source``.

    Raises
    ------
    ConfigError
        An unknown key, a value of the wrong type, or an interpolation.
    """
    refuse_interpolations(other, source)
    _strict_bools(other, source)
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except ConfigKeyError as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(
            str(key), f"unknown key in {source} (`flwr-multilevel config` lists every key)"
        ) from None
    except (OmegaConfBaseException, TypeError, ValueError) as err:
        key = getattr(err, "full_key", None)
        plain = OmegaConf.to_container(other) if OmegaConf.is_config(other) else other
        if not key and isinstance(plain, Mapping):  # find the top-level key at fault
            for name, value in plain.items():
                try:
                    OmegaConf.merge(base, {name: value})
                except (OmegaConfBaseException, TypeError, ValueError):
                    key = str(name)
                    break
        key = str(key or "config")
        got: Any = plain
        for part in key.split("."):
            got = got.get(part) if isinstance(got, Mapping) else got
        raise ConfigError(
            key, f"expected {_expected(key)} in {source}, got {schema.show(got)}"
        ) from None


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


# ---- Flower run config ---------------------------------------------------------------------

NULLABLE = {
    "time_steps",
    "max_time_slots",
    "eval.train_examples",
    "output_dir",
    "rates.values",
    "hub.clip_norm",
    "theory.L",
    "theory.sigma2",
    "theory.beta",
    "theory.f_gap",
}


def _decode_options(text: str) -> dict[str, Any]:
    """Parse ``"proximal_mu=0.1,eta=0.01"`` (values as YAML scalars)."""
    options: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError("strategy.options", f"expected key=value pairs, got {text!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"strategy.options.{key.strip()}", "could not parse") from None
    return options


def flwr_run_config(app_dir: str | Path, overrides: str) -> dict[str, Any]:
    r"""Return the run config ``flwr run APP_DIR --run-config OVERRIDES`` gives the ServerApp.

    The app's ``[tool.flwr.app.config]`` fused with the overrides, parsed by
    Flower's own functions, so a bad submission can be caught before it is
    sent (``flwr run`` itself exits 0 whatever the run's end).

    Raises
    ------
    ConfigError
        The app folder has no Flower App, the overrides do not parse, or they
        name a key the app does not have.

    Examples
    --------
    >>> import tempfile
    >>> app = Path(tempfile.mkdtemp())
    >>> _ = (app / "pyproject.toml").write_text('[tool.flwr.app.config]\ntau = 4\n')
    >>> flwr_run_config(app, "tau=8")
    {'tau': 8}
    >>> flwr_run_config(app, "q=2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: --run-config: key 'q' is not in the app's ...
    """
    app = Path(app_dir)
    try:
        project = tomllib.loads((app / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            "--app",
            f"expected a Flower App folder with a pyproject.toml, got {str(app)!r} "
            f"({type(err).__name__})",
        ) from None
    defaults = project.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    try:
        parsed = parse_config_args([overrides])
    except Exception as err:  # pylint: disable=broad-except  # click.ClickException, OSError
        message = getattr(err, "message", None) or str(err)
        raise ConfigError("--run-config", " ".join(str(message).split())[:300]) from None
    for key in parsed:
        if key not in flatten_dict(defaults):
            raise ConfigError(
                "--run-config", f"key {key!r} is not in the app's [tool.flwr.app.config]"
            )
    return dict(fuse_dicts(flatten_dict(defaults), parsed))


def from_run_config(run_config: Mapping[str, Any], *, files: bool = False) -> DictConfig:
    """Return the typed config of a Flower ``run_config`` (flattened ``a.b`` keys).

    Parameters
    ----------
    run_config : Mapping[str, Any]
        ``context.run_config``: ``[tool.flwr.app.config]`` with ``--run-config``.
    files : bool (default: False)
        Allow ``hubs.graph`` and ``hubs.mixing`` to name files. A run config
        comes from whoever submits the run, so by default files are refused:
        the ServerApp reads nothing its submitter names.

    Returns
    -------
    DictConfig
        The default config merged with the run config; call :func:`validate`.

    Raises
    ------
    ConfigError
        Unknown key, wrong type, interpolation, or a file path.

    Examples
    --------
    >>> from_run_config({"hubs.workers": "2,3", "time_steps": "", "tau": 8}).hubs.workers
    '2,3'
    """
    flat = dict(run_config)
    refuse_interpolations(flat, "run_config")
    for key, value in flat.items():
        if value == "" and key in NULLABLE:
            flat[key] = None
        if key == "strategy.options" and isinstance(value, str):
            flat[key] = _decode_options(value)
    cfg = merge(default_config(), unflatten_dict(flat), "run_config")
    if not files:
        for key, names in (("hubs.graph", GRAPHS), ("hubs.mixing", MIXINGS)):
            value = OmegaConf.select(cfg, key)
            if value not in names:
                raise ConfigError(
                    key,
                    f"expected one of {', '.join(names)} under `flwr run` (files are not read "
                    f"from a run config), got {str(value)[:60]!r}",
                )
    return cfg


def to_run_config(cfg: DictConfig) -> dict[str, Any]:
    """Return the flattened run config of ``cfg`` (the ``[tool.flwr.app.config]`` table).

    Examples
    --------
    >>> to_run_config(default_config())["time_steps"]
    ''
    """
    plain = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(plain, dict)
    options = plain["strategy"].pop("options") or {}
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, list):
                flat[f"{prefix}{key}"] = ",".join(str(v) for v in value)
            else:
                flat[f"{prefix}{key}"] = "" if value is None else value

    walk(cast(dict[str, Any], plain), "")
    flat["strategy.options"] = ",".join(f"{k}={v}" for k, v in options.items())
    return flat


def checked_run_config(run_config: Mapping[str, Any]) -> DictConfig:
    """Return the validated config of a ``flwr run`` (for the ServerApp), output folder planned.

    A ConfigError is logged as one line (``flwr-multilevel: error: ...``) before
    it is raised, so the reason leads the ServerApp's log.
    """
    from flwr_multilevel.run.results import plan_output_dir  # pylint: disable=import-outside-toplevel

    try:
        cfg = validate(from_run_config(run_config))
        cfg.output_dir = str(plan_output_dir(cfg.output_dir, bool(cfg.overwrite)))
        return cfg
    except ConfigError as err:
        log(ERROR, "flwr-multilevel: error: %s", err)
        raise


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
    workers = int_list("hubs.workers", cfg.hubs.workers)
    if isinstance(workers, list):
        if len(workers) != cfg.hubs.count:
            raise ConfigError(
                "hubs.workers", f"expected {cfg.hubs.count} counts (hubs.count), got {workers}"
            )
        for count in workers:
            integer("hubs.workers", count, 1, schema.MAX_WORKERS_PER_HUB)
    cfg.hubs.workers = workers


def _check_rates(cfg: DictConfig) -> None:
    rates = cfg.rates
    choice("rates.distribution", rates.distribution, DISTRIBUTIONS)
    for key in ("p", "low", "high", "p_slow", "p_fast"):
        number(f"rates.{key}", rates[key], 0, 1, low_open=True)
    number("rates.slow_fraction", rates.slow_fraction, 0, 1)
    if rates.low > rates.high:
        raise ConfigError("rates.low", f"expected low <= high ({rates.high}), got {rates.low}")
    rates["values"] = schema.float_list("rates.values", rates["values"])
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
                f"expected one of {', '.join(names)} or an existing file, got {schema.show(value)}",
            )
    path_text("data.root", cfg.data.root)
    if cfg.output_dir is not None:
        cfg.output_dir = path_text("output_dir", cfg.output_dir) if cfg.output_dir else None


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
        integer(key, cfg[key], 1, 10**7)
    integer("hubs.count", cfg.hubs.count, 1, 10_000)
    for key in ("time_steps", "max_time_slots"):
        if cfg[key] is not None:
            integer(key, cfg[key], 1, 10**12)
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
    if cfg.hub.clip_norm is not None:
        number("hub.clip_norm", cfg.hub.clip_norm, 0, 1e12, low_open=True)
    number("hub.min_replies", cfg.hub.min_replies, 0, 1)
    integer("hub.max_failed_rounds", cfg.hub.max_failed_rounds, 0, 10**9)
    for name in ("L", "sigma2", "beta", "f_gap"):
        if cfg.theory[name] is not None:
            number(f"theory.{name}", cfg.theory[name], 0, MAX_CONSTANT, low_open=name == "L")
    if not isinstance(cfg.strategy.name, str):
        raise ConfigError(
            "strategy.name", f"expected a strategy name, got {schema.show(cfg.strategy.name)}"
        )
    options = OmegaConf.to_container(cfg.strategy.options, resolve=False)
    assert isinstance(options, dict)
    schema.check_strategy(cfg.strategy.name, cast(dict[str, Any], options))
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
