"""The typed config and merging into it: errors name the key at fault and its source.

:func:`default_config` is the shipped ``default.yaml`` on the schema of
:mod:`flwr_multilevel.experiment.schema`; :func:`merge` takes a file's, an
override's or a run config's keys into it. Interpolations (``${...}``) are
refused wherever they appear, never resolved.
"""

import typing
from collections.abc import Mapping
from dataclasses import is_dataclass
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment import schema
from flwr_multilevel.experiment.ranges import (
    show,
)


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
                    f"expected true or false in {source}, got {show(value)}",
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
        raise ConfigError(key, f"expected {_expected(key)} in {source}, got {show(got)}") from None
