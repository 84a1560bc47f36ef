"""Before any message: a simulated Flower App's ClientApp must use ``multilevel_mod``.

Under ``flwr run`` on a simulation, the ServerApp and the simulation engine
share one process and one App folder, so the ClientApp the nodes will run can
be looked at before the engine has started Ray (about 30 s on 2 cores). A
ClientApp whose train handler cannot reach
:func:`~flwr_multilevel.clients.multilevel_mod` (neither among the app's mods
nor its train function's) would fail the workers' discovery with its own
exception once Ray is up; :func:`check_client_app` says so at once, in one line.

A deployment's ClientApp runs elsewhere, with its own environment: its first
reply tells (:mod:`~flwr_multilevel.strategies.discovery`).
"""

import functools
from collections.abc import Callable
from types import CodeType
from typing import Any

from flwr.app import MessageType
from flwr.serverapp import Grid

from flwr_multilevel import flower_compat
from flwr_multilevel.clients.mod import multilevel_mod
from flwr_multilevel.errors import WorkerDiscoveryError

DEPTH = 32  # wrappers followed at most (Flower adds one per mod)
ITEMS = 64  # items of a list or tuple followed at most


def _names(code: CodeType) -> set[str]:
    """Return the global and attribute names ``code`` and its nested functions read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _inner(obj: Any) -> list[Any]:
    """Return what ``obj`` wraps: closure cells, a partial's function and arguments, ..."""
    found: list[Any] = [getattr(obj, "__wrapped__", None), getattr(obj, "__func__", None)]
    if isinstance(obj, functools.partial):
        found += [obj.func, *obj.args, *obj.keywords.values()]
    for cell in getattr(obj, "__closure__", None) or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    if isinstance(obj, (list, tuple)):
        found += list(obj[:ITEMS])
    elif callable(obj) and not hasattr(obj, "__code__") and not isinstance(obj, type):
        found.append(type(obj).__call__)  # a mod written as a class
    return [o for o in found if o is not None]


def reaches(handler: Any, mod: Callable[..., Any] = multilevel_mod) -> bool:
    """Return whether ``handler`` can call ``mod``: it is ``mod``, wraps it, or names it.

    Follows what Flower's mod chain and Python's wrappers keep (closures,
    ``functools.partial``, ``__wrapped__``, bound methods, callable objects)
    and counts a function that reads the name ``mod.__name__`` as calling it,
    so a mod that wraps ``mod`` in any written way passes.

    Examples
    --------
    >>> def wrapper(msg, context, call_next):
    ...     return multilevel_mod(msg, context, call_next)
    >>> reaches(functools.partial(wrapper)), reaches(lambda msg, context: None)
    (True, False)
    """
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(handler, 0)]
    while todo:
        obj, level = todo.pop()
        if obj is mod:
            return True
        if id(obj) in seen or level > DEPTH:
            continue
        seen.add(id(obj))
        code = getattr(obj, "__code__", None)
        if isinstance(code, CodeType) and mod.__name__ in _names(code):
            return True
        todo += [(inner, level + 1) for inner in _inner(obj)]
    return False


def check_client_app(grid: Grid) -> None:
    """Raise now if the simulated App's ClientApp cannot answer MLL-SGD's discovery.

    Only on Flower's simulation grid, and only when the ServerApp's process
    can load the App's ClientApp (else the discovery finds out).

    Raises
    ------
    WorkerDiscoveryError
        The ClientApp's train handler never reaches ``multilevel_mod``.
    """
    if not flower_compat.is_simulation_grid(grid):
        return
    found = flower_compat.running_client_app()
    if found is None:
        return
    reference, app = found
    handler = flower_compat.message_handler(app, MessageType.TRAIN)
    if handler is None or reaches(handler):
        return
    raise WorkerDiscoveryError(
        f"the ClientApp {reference} does not use multilevel_mod, so its nodes cannot say "
        "which worker they are or time their steps: make it "
        "ClientApp(mods=[multilevel_mod]) (from flwr_multilevel.clients import multilevel_mod)"
    )
