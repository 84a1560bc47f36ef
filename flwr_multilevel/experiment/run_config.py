"""Flower run configs: ``[tool.flwr.app.config]`` and ``--run-config`` as a typed config and back.

A Flower run config holds the keys of the config flattened (``hubs.count``);
TOML has neither lists nor null, so a list is a comma-separated string
(``hubs.workers = "2,3,4"``), null is ``""`` and ``strategy.options`` is a string
of ``key=value`` pairs (``"proximal_mu=0.1,eta=0.01"``).
"""

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import tomllib
import yaml
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.merge import default_config, merge, refuse_interpolations
from flwr_multilevel.experiment.schema import (
    GRAPHS,
    MIXINGS,
)
from flwr_multilevel.flower_compat import flatten_dict, unflatten_dict

MAX_PYPROJECT_BYTES = 1_000_000
# a `--run-config` pair, as Flower's parse_config_args finds them (text between pairs is ignored)
PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")
NULLABLE = {
    "time_steps",
    "max_time_slots",
    "eval.train_examples",
    "output_dir",
    "rates.values",
    "hub.clip_norm",
    "deploy.run_timeout",
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
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.flower_compat import fuse_dicts, parse_config_args

    defaults = app_config(app_dir)
    leftover = PAIR.sub(" ", overrides).strip()
    if leftover and not overrides.strip().endswith(".toml"):  # Flower would ignore it
        raise ConfigError(
            "--run-config",
            f"expected space-separated key=value pairs, {leftover.split()[0][:60]!r} is not one",
        )
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


def app_config(app_dir: str | Path) -> dict[str, Any]:
    """Return the ``[tool.flwr.app.config]`` table of the Flower App in ``app_dir`` ({} if none).

    Raises
    ------
    ConfigError
        ``--app``: no readable ``pyproject.toml`` of at most 1 MB, not TOML, or
        one of ``tool``, ``tool.flwr``, ``tool.flwr.app``, ``tool.flwr.app.config``
        is not a table.
    """
    app = Path(app_dir)
    path = app / "pyproject.toml"
    try:
        if not path.is_file():
            raise FileNotFoundError(path)
        with path.open("rb") as file:
            data = file.read(MAX_PYPROJECT_BYTES + 1)
        if len(data) > MAX_PYPROJECT_BYTES:
            raise ConfigError("--app", f"{str(path)!r} is larger than {MAX_PYPROJECT_BYTES} bytes")
        project = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            "--app",
            f"expected a Flower App folder with a pyproject.toml, got {str(app)!r} "
            f"({type(err).__name__})",
        ) from None
    table: Any = project
    for depth, name in enumerate(("tool", "flwr", "app", "config"), 1):
        table = table.get(name, {})
        if not isinstance(table, dict):
            where = ".".join(("tool", "flwr", "app", "config")[:depth])
            raise ConfigError(
                "--app",
                f"{str(path)!r}: expected {where} to be a table, got {type(table).__name__}",
            )
    try:
        return dict(flatten_dict(table))
    except ValueError as err:  # a value Flower's run configs cannot hold (a list, a date)
        raise ConfigError("--app", f"{str(path)!r}: {' '.join(str(err).split())[:200]}") from None


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
