"""The Flower App around a running ServerApp: its ClientApp, and the handler a message reaches.

Flower's runtime loads an App's ServerApp (and, in simulation, its ClientApp)
with the App's folder put on ``sys.path`` (``flwr.supercore.object_ref.load_app``),
and the folder's ``pyproject.toml`` names both in
``[tool.flwr.app.components]``. A ``ClientApp`` keeps its handlers, each
already wrapped in its mods, in ``_registered_funcs`` (``"<category>.<action>"``)
or, built from a ``client_fn``, in ``_call``.
"""

import importlib
import sys
from logging import DEBUG
from pathlib import Path
from types import ModuleType
from typing import Any

import tomllib
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from flwr_multilevel.flower_compat.guard import check_version, warn_missing


def _components(folder: Path) -> dict[str, Any]:
    """Return ``[tool.flwr.app.components]`` of ``folder/pyproject.toml`` ({} if none)."""
    try:
        config = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    return found if isinstance(found, dict) else {}


def _loaded_from(module: ModuleType | None, folder: Path) -> bool:
    """Return whether ``module`` was loaded from a file in ``folder``."""
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(folder.resolve())


def _load(reference: str) -> Any:
    """Return the object of ``"<module>:<attribute.path>"``, importing the module."""
    module_name, _, attributes = reference.partition(":")
    found: Any = importlib.import_module(module_name)
    for name in attributes.split("."):
        found = getattr(found, name)
    return found


def running_client_app() -> tuple[str, ClientApp] | None:
    """Return the ClientApp (and its reference) of the Flower App whose ServerApp runs here.

    The App is the folder on ``sys.path`` whose ``pyproject.toml`` names a
    ServerApp module that this process loaded from that folder. None when no
    such App is found, or its ClientApp cannot be loaded in this process (the
    reason is logged at DEBUG level).
    """
    check_version()
    for entry in list(sys.path):
        folder = Path(entry or ".")
        components = _components(folder)
        server, client = components.get("serverapp"), components.get("clientapp")
        if not (isinstance(server, str) and isinstance(client, str)):
            continue
        if not _loaded_from(sys.modules.get(server.partition(":")[0]), folder):
            continue
        try:
            app = _load(client)
        except Exception as err:  # pylint: disable=broad-except  # the App's own import
            log(DEBUG, "ClientApp %s not checked here: %r", client, err)
            return None
        return (client, app) if isinstance(app, ClientApp) else None
    return None


def message_handler(app: ClientApp, category: str) -> Any:
    """Return the callable a ``category`` message (default action) reaches, mods included.

    None when the app has none (Flower then answers with an error), or when
    this Flower keeps its handlers elsewhere (one warning: the check that
    uses it is skipped).
    """
    # pylint: disable=protected-access
    call, funcs = getattr(app, "_call", None), getattr(app, "_registered_funcs", None)
    if call is not None:
        return call
    if not isinstance(funcs, dict):
        warn_missing("ClientApp._registered_funcs", "the ClientApp is checked by its first reply")
        return None
    return funcs.get(f"{category}.default")
