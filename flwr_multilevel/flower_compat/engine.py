"""Swaps into Flower's simulation engine, and the engine objects its swapped-in parts use.

Flower's engine (``flwr.server.superlink.fleet.vce.vce_api``) runs three
module-level pieces we replace for the length of a run: the node feeder
(``add_messages_to_queue``), the worker threads (``worker``) and, in its Ray
backend, the actor class (``raybackend.ClientAppActor``). Each swap checks
that the name exists with the expected parameters and that the engine looks
it up when it runs; the replacement parts reach the engine's objects (the
LinkState, the actor pool, the node contexts, the metrics) only through the
functions below.
"""

import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from flwr.app import Context, Message

from flwr_multilevel.flower_compat.guard import (
    check_version,
    compat_error,
    looks_up,
    require,
    shape_problem,
    warn_missing,
)

VCE_API = "flwr.server.superlink.fleet.vce.vce_api"
LINK_STATE = "flwr.server.superlink.linkstate"
RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"
FEEDER_PARAMS = ("state", "queue", "nodes_mapping", "f_stop")
WORKER_PARAMS = (
    "messageins_queue",
    "messageres_queue",
    "node_info_store",
    "backend",
    "f_stop",
    "metrics",
)
ACTORS = "flwr.simulation.ray_transport.ray_actor"
CONTEXTS = "flwr.compat.client.run_info_store"
METRICS = "flwr.server.superlink.fleet.vce.metrics"
# What the grouped worker (engines/ray_groups.py) uses of the engine, by class:
# (module, class, attribute, the parameters it must start with)
GROUPED_ENGINE = (
    (RAY_BACKEND, "RayBackend", "num_workers", ()),
    (ACTORS, "BasicActorPool", "submit", ("actor_fn", "job")),
    (ACTORS, "BasicActorPool", "add_actor_back_to_pool", ("future",)),
    (CONTEXTS, "DeprecatedRunInfoStore", "retrieve_context", ("run_id",)),
    (CONTEXTS, "DeprecatedRunInfoStore", "update_context", ("run_id", "context")),
    (METRICS, "VceMetrics", "add_clientapp_runtime", ("runtime",)),
)

# Where Flower's engine logs each failed message at ERROR, with its traceback: (module, function)
ENGINE_ERROR_LOGS = (("vce_api", "worker"), ("raybackend", "process_message"))


def _module(name: str) -> ModuleType:
    """Import Flower's module ``name``; raise FlowerCompatError if there is none."""
    check_version()
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise compat_error(name, f"cannot be imported ({err})") from None


@contextmanager
def _swapped(module: ModuleType, attr: str, value: Any) -> Iterator[None]:
    """Within the block, ``module.attr`` is ``value``; Flower's own again after."""
    original = getattr(module, attr)
    setattr(module, attr, value)
    try:
        yield
    finally:
        setattr(module, attr, original)


def _swappable(module: ModuleType, attr: str, params: tuple[str, ...], user: str) -> Any:
    """Return ``module.attr`` once checked: its parameters, and that ``user`` looks it up."""
    original = require(module, attr, f"{module.__name__}.{attr}", params)
    runner = getattr(module, user, None)
    if not looks_up(runner, attr):
        raise compat_error(f"{module.__name__}.{user}", f"no longer calls {attr}")
    return original


@contextmanager
def engine_feeder(feeder: Callable[..., None]) -> Iterator[None]:
    """Within the block, the engine moves messages from its LinkState to workers with ``feeder``.

    ``feeder`` takes the arguments of ``vce_api.add_messages_to_queue``
    (``state, queue, nodes_mapping, f_stop``) and reads the LinkState through
    :func:`next_message_ins` and :func:`tap_stored_messages`.

    Raises
    ------
    FlowerCompatError
        The engine has no such function, or no longer calls it, or its
        LinkState has no ``get_message_ins(node_id, limit)``.
    """
    vce_api = _module(VCE_API)
    _swappable(vce_api, "add_messages_to_queue", FEEDER_PARAMS, "run_api")
    link_state = getattr(_module(LINK_STATE), "LinkState", None)
    require(link_state, "get_message_ins", "LinkState.get_message_ins", ("node_id", "limit"))
    with _swapped(vce_api, "add_messages_to_queue", feeder):
        yield


@contextmanager
def engine_worker(wrap: Callable[[Callable[..., None]], Callable[..., None]]) -> Iterator[None]:
    """Within the block, the engine's worker threads run ``wrap(flowers_worker)``.

    The result takes the arguments of ``vce_api.worker`` (``messageins_queue,
    messageres_queue, node_info_store, backend, f_stop, metrics``).

    Raises
    ------
    FlowerCompatError
        The engine has no such function, or no longer calls it.
    """
    vce_api = _module(VCE_API)
    original = _swappable(vce_api, "worker", WORKER_PARAMS, "run_api")
    with _swapped(vce_api, "worker", wrap(original)):
        yield


def grouped_engine_problem() -> str | None:
    """Return what the engine lacks for a grouped worker and its actor class, or None."""
    raybackend = _module(RAY_BACKEND)
    problem = shape_problem(raybackend, "ClientAppActor")
    if problem is not None:
        return f"{RAY_BACKEND}.ClientAppActor {problem}"
    if not looks_up(
        getattr(getattr(raybackend, "RayBackend", None), "build", None), "ClientAppActor"
    ):
        return f"{RAY_BACKEND}.RayBackend.build no longer creates ClientAppActor"
    if not all(looks_up(raybackend.RayBackend.__init__, a) for a in ("pool", "app_fn")):
        return f"{RAY_BACKEND}.RayBackend no longer has .pool and .app_fn"
    for module, cls, attr, params in GROUPED_ENGINE:
        try:
            owner = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            return f"{module}.{cls} is missing"
        problem = shape_problem(owner, attr, params)
        if problem is not None:
            return f"{module}.{cls}.{attr} {problem}"
    return None


@contextmanager
def engine_actor(actor_class: Any) -> Iterator[bool]:
    """Within the block, the engine's Ray backend makes its actors from ``actor_class``.

    Yields whether it does. Groups are an optimisation: if the engine lacks
    what the grouped worker uses (:data:`GROUPED_ENGINE`), one warning names
    it, Flower's actors stay, and the block yields False.
    """
    problem = grouped_engine_problem()
    if problem is not None:
        warn_missing(problem, "one Ray actor call per message (Flower's own worker)")
        yield False
        return
    with _swapped(_module(RAY_BACKEND), "ClientAppActor", actor_class):
        yield True


# ---- the engine's objects, as the swapped-in feeder and worker use them ----


@contextmanager
def tap_stored_messages(
    state: Any, on_stored: Callable[[Message, str | None], None]
) -> Iterator[bool]:
    """Within the block, ``on_stored(message, message_id)`` follows every message ``state`` stores.

    Yields whether it does: a LinkState without ``store_message_ins`` is
    left as it is (the feeder then polls it), with one warning.
    """
    store = getattr(state, "store_message_ins", None)
    if store is None:
        warn_missing("LinkState.store_message_ins", "the node feeder polls the LinkState")
        yield False
        return

    def store_message_ins(message: Message) -> Any:
        message_id = store(message)
        on_stored(message, message_id)
        return message_id

    state.store_message_ins = store_message_ins
    try:
        yield True
    finally:
        del state.store_message_ins  # the LinkState's own method again


def undelivered_messages_ins(state: Any) -> list[Message] | None:
    """Return the messages ``state`` stores and has not delivered, in store order, in one scan.

    None if the LinkState keeps them otherwise than the in-memory one
    (``message_ins_store`` under ``lock``): then ask node by node
    (:func:`next_message_ins`), which scans every stored message per node.
    Nothing is marked delivered.
    """
    store, lock = getattr(state, "message_ins_store", None), getattr(state, "lock", None)
    if not isinstance(store, dict) or lock is None:
        return None
    with lock:
        stored = list(store.values())
    return [m for m in stored if isinstance(m, Message) and not m.metadata.delivered_at]


def next_message_ins(state: Any, node_id: int) -> list[Message]:
    """Return the LinkState's next message for ``node_id`` (none or one), marked delivered."""
    return list(state.get_message_ins(node_id=node_id, limit=1))


def actor_count(backend: Any) -> int:
    """Return how many actors the engine's backend runs (at least 1)."""
    return max(1, int(backend.num_workers))


def node_context(node_info_store: dict[int, Any], message: Message) -> Context:
    """Return the Context of ``message``'s node, as the engine keeps it."""
    store = node_info_store[message.metadata.dst_node_id]
    return store.retrieve_context(run_id=message.metadata.run_id)


def keep_node_context(node_info_store: dict[int, Any], message: Message, context: Context) -> None:
    """Store ``context`` as the updated Context of ``message``'s node."""
    store = node_info_store[message.metadata.dst_node_id]
    store.update_context(message.metadata.run_id, context=context)


def add_clientapp_runtime(metrics: Any, seconds: float) -> None:
    """Count ``seconds`` of ClientApp work in the engine's metrics."""
    metrics.add_clientapp_runtime(seconds)


def submit_to_actor(backend: Any, call: Callable[..., Any], messages: Any, contexts: Any) -> Any:
    """Hand ``call(actor, app_fn, messages, cid, contexts)`` to an idle actor; return its future."""
    return backend.pool.submit(call, (backend.app_fn, messages, "", contexts))


def release_actor(backend: Any, future: Any) -> None:
    """Return the actor that ran ``future`` to the engine's pool."""
    backend.pool.add_actor_back_to_pool(future)


def is_simulation_grid(grid: Any) -> bool:
    """Return whether ``grid`` is the grid of Flower's simulation engine (``InMemoryGrid``).

    That engine registers every SuperNode of the federation at once when it
    starts, so its node count is final within moments; a deployment's nodes
    connect whenever they come up.
    """
    return any(c.__name__ == "InMemoryGrid" for c in type(grid).__mro__)


def set_grid_pull_interval(grid: Any, seconds: float) -> None:
    """Make ``grid`` poll for replies every ``seconds``, if it polls (``pull_interval``).

    Flower's ``InMemoryGrid`` (simulation) polls; other grids are left as they
    are. An ``InMemoryGrid`` without the setting logs one warning.
    """
    check_version()
    if isinstance(getattr(grid, "pull_interval", None), (int, float)):
        grid.pull_interval = seconds
    elif is_simulation_grid(grid):
        warn_missing("InMemoryGrid.pull_interval", "replies are polled at Flower's own rate")


class _EngineErrors(logging.Filter):
    """Drop the ERROR records of each failed message from Flower's engine (ENGINE_ERROR_LOGS)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno >= logging.ERROR
            and (record.module, record.funcName) in ENGINE_ERROR_LOGS
        )


@contextmanager
def quiet_engine_errors() -> Iterator[None]:
    """Within the block, Flower's engine logs no traceback per failed message.

    A message whose ClientApp raised still comes back as an error reply with
    its reason; the hubs summarise those in one line per round. Should Flower
    log from elsewhere, its lines simply show again.
    """
    quiet = _EngineErrors()
    logger = logging.getLogger("flwr")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def grid_pull_interval(grid: Any) -> float | None:
    """Return the seconds ``grid`` waits between reply polls, or None if it does not poll."""
    value = getattr(grid, "pull_interval", None)
    return float(value) if isinstance(value, (int, float)) else None
