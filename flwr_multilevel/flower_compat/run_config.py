"""Flower's own run-config helpers (``flwr.common.config``): run configs read as ``flwr run``'s.

Flower exports them from no public module; without them a run config cannot
be read the way ``flwr run --run-config`` reads it, so a missing one raises
FlowerCompatError. Imported on first use (``flwr.common.config`` pulls in click).
"""

import importlib
from typing import Any

from flwr_multilevel.flower_compat.guard import check_version, require

MODULE = "flwr.common.config"


def _flower(name: str) -> Any:
    """Return ``flwr.common.config.<name>``; raise FlowerCompatError if it is missing."""
    check_version()
    try:
        module = importlib.import_module(MODULE)
    except ImportError:
        module = None
    return require(module, name, f"{MODULE}.{name}")


def flatten_dict(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``raw`` with nested tables as dotted keys, as Flower flattens a run config.

    Examples
    --------
    >>> flatten_dict({"hubs": {"count": 2}, "tau": 4})
    {'hubs.count': 2, 'tau': 4}
    """
    return _flower("flatten_dict")(raw)


def unflatten_dict(flat: dict[str, Any]) -> dict[str, Any]:
    """Return ``flat``'s dotted keys as nested tables (Flower's ``unflatten_dict``).

    Examples
    --------
    >>> unflatten_dict({"hubs.count": 2, "tau": 4})
    {'hubs': {'count': 2}, 'tau': 4}
    """
    return _flower("unflatten_dict")(flat)


def parse_config_args(config: list[str] | None) -> dict[str, Any]:
    """Return the flattened overrides of ``--run-config`` arguments, parsed as ``flwr run`` does."""
    return _flower("parse_config_args")(config)


def fuse_dicts(main: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``main`` with ``overrides`` applied, as ``flwr run`` fuses a run config."""
    return _flower("fuse_dicts")(main, overrides)
