"""Make an existing Flower ClientApp an MLL-SGD worker: one mod, one call in the training loop.

``ClientApp(mods=[multilevel_mod])`` answers the hub's discovery message (which
worker is this node?) and puts ``steps`` in every train reply. Inside the
user's own train function, ``for batch in time_steps(trainloader):`` replaces
the epoch loop: it runs the round's tau time steps, yielding the next batch of
the user's loader at each time step whose Bernoulli(p_i) coin came up. The
coins are seeded by ``(seed, round, worker)``, exactly as in the paper path
(:func:`flwr_multilevel.clients.worker.step_schedule`). The tau coins are the
round's whole budget: every later call in the same train message (the app's
next local epoch, a nested loop) continues where the last one stopped, so a
round never takes more than its coins allow and never flips one twice.
:func:`steps_taken` says how many steps the round took, for the app's own
averages. The user's model, optimizer, loss and data loader stay as they are.

Examples
--------
>>> from flwr.clientapp import ClientApp
>>> app = ClientApp(mods=[multilevel_mod])
"""

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from flwr_multilevel.flower_compat import ClientAppCallable
from flwr_multilevel.model.rates import coin_flips
from flwr_multilevel.protocol.keys import (
    ASK,
    DISCOVERY,
    OPERATING_RATE,
    PARTITION_ID,
    ROUND_KEYS,
    SEED,
    SERVER_ROUND,
    STEPS,
    TIME_STEPS,
    WORKER,
    WORKER_ID,
)

T = TypeVar("T")


@dataclass
class _Round:
    """The current round of one worker, shared by the mod and :func:`time_steps`.

    The coins are flipped when :func:`time_steps` first asks for them: a train
    function that draws its own schedule (the paper path) does not pay twice.
    """

    draw: tuple[int, int, int, int, float]  # coin_flips(seed, round, worker, tau, rate)
    steps: int = 0
    used: bool = False
    flipped: int = 0  # coins used so far this round (every call of time_steps shares them)
    _coins: np.ndarray | None = None
    _batches: dict[int, Iterator[Any]] = field(default_factory=dict)  # loader -> where it is

    @property
    def coins(self) -> np.ndarray:
        """The round's tau coins, one per time step."""
        if self._coins is None:
            self._coins = coin_flips(*self.draw)
        return self._coins

    def next_batch(self, batches: Iterable[T]) -> T:
        """Return the next batch of ``batches``, starting it over when it is exhausted.

        Each loader keeps its place across the calls of :func:`time_steps` in a round.
        """
        iterator = self._batches.get(id(batches))
        for _ in range(2):  # the loader as it stands, then once more from its start
            if iterator is not None:
                try:
                    return next(iterator)
                except StopIteration:
                    pass
            iterator = self._batches[id(batches)] = iter(batches)
        raise ValueError("time_steps: the data loader yielded no batch")


_CURRENT: ContextVar[_Round | None] = ContextVar("mll_sgd_round", default=None)


def worker_id(context: Context) -> int:
    """Return this node's worker index: node config ``worker-id``, else ``partition-id``.

    Raises
    ------
    ValueError
        Neither is set, or it is not a non-negative integer.
    """
    for key in (WORKER_ID, PARTITION_ID):
        if key in context.node_config:
            value = context.node_config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"node config '{key}': expected an integer >= 0, got {value!r}")
            return value
    raise ValueError("node config: expected 'worker-id' or 'partition-id' (the worker's index)")


def discovery_message(dst_node_id: int) -> Message:
    """Return the message that asks a node which worker it is."""
    content = RecordDict({DISCOVERY: ConfigRecord({ASK: WORKER_ID})})
    return Message(content, dst_node_id=dst_node_id, message_type=MessageType.TRAIN)


def _round_config(msg: Message) -> ConfigRecord | None:
    """Return the train config if it carries a hub's MLL-SGD instructions."""
    for record in msg.content.values():  # Flower's typed views rebuild on every access
        if isinstance(record, ConfigRecord) and all(key in record for key in ROUND_KEYS):
            return record
    return None


def multilevel_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower Mod that makes a ClientApp an MLL-SGD worker.

    * A discovery message gets the node's worker id (see :func:`worker_id`)
      without reaching the app.
    * A train message from an MLL-SGD hub sets up the round's coins for
      :func:`time_steps`, calls the app, and writes the number of steps taken
      under ``steps`` in the reply's MetricRecord.
    * Anything else passes through unchanged.

    Raises
    ------
    RuntimeError
        The train function neither iterated over :func:`time_steps` nor
        reported ``steps`` itself (Flower turns this into an error reply).
    """
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if isinstance(msg.content.get(DISCOVERY), ConfigRecord):
        answer = RecordDict({WORKER: MetricRecord({WORKER_ID: worker_id(context)})})
        return Message(answer, reply_to=msg)
    config = _round_config(msg)
    if config is None:  # a stock strategy drives this app
        return call_next(msg, context)
    state = _Round(
        (
            int(config[SEED]),  # type: ignore[arg-type]
            int(config[SERVER_ROUND]),  # type: ignore[arg-type]
            int(config[WORKER_ID]),  # type: ignore[arg-type]
            int(config[TIME_STEPS]),  # type: ignore[arg-type]
            float(config[OPERATING_RATE]),  # type: ignore[arg-type]
        )
    )
    token = _CURRENT.set(state)
    try:
        reply = call_next(msg, context)
    finally:
        _CURRENT.reset(token)
    if reply.has_error():
        return reply
    records = [(k, r) for k, r in reply.content.items() if isinstance(r, MetricRecord)]
    if len(records) != 1:
        raise RuntimeError(f"the train reply must hold one MetricRecord, got {len(records)}")
    name, metrics = records[0]
    if state.used:
        reply.content[name] = MetricRecord({**dict(metrics.items()), STEPS: state.steps})
    elif STEPS not in metrics:
        raise RuntimeError(
            "the train function must iterate over time_steps(trainloader) "
            "(or report 'steps' itself) to run MLL-SGD's time steps"
        )
    return reply


def time_steps(batches: Iterable[T]) -> Iterator[T]:
    """Yield one batch per successful time step of this round (one local SGD step each).

    Inside a train message of an MLL-SGD hub (under :func:`multilevel_mod`),
    it flips the round's tau coins, seeded by ``(seed, round, worker)``, and at
    each success yields the next batch of ``batches``, starting over when the
    loader is exhausted. A round whose coins all fail yields nothing.

    The tau coins are one budget per round, however the app loops: a second
    call in the same train message (the app's next local epoch, or a nested
    loop) continues with the coins the first left, and yields nothing once
    all tau are flipped. ``for _ in range(epochs): for b in time_steps(loader)``
    therefore takes exactly the round's coin-flipped steps for any ``epochs``.

    Outside MLL-SGD (a stock strategy drives the app), it yields each batch
    once: one local epoch.

    Parameters
    ----------
    batches : Iterable
        The user's data loader (re-iterable, as a ``torch.utils.data.DataLoader`` is).

    Raises
    ------
    ValueError
        The loader yields no batch at all.

    Examples
    --------
    >>> list(time_steps([1, 2, 3]))  # no MLL-SGD round here: one epoch
    [1, 2, 3]
    """
    state = _CURRENT.get()
    if state is None:
        yield from batches
        return
    state.used = True
    coins = state.coins
    while state.flipped < len(coins):
        take = coins[state.flipped]
        state.flipped += 1  # flipped once, even if the app stops the loop at this step
        if take:
            batch = state.next_batch(batches)
            state.steps += 1
            yield batch


def steps_taken(otherwise: int) -> int:
    """Return how many steps (batches) :func:`time_steps` has yielded in this round.

    The divisor of the app's own per-step averages: a train function that
    sums a loss over its steps reports ``total / max(steps_taken(...), 1)``.
    A round may take no step at all (every coin failed): then it is 0.
    Outside an MLL-SGD train message it returns ``otherwise``, the app's own
    count (``len(trainloader)`` in Flower's quickstart).

    Examples
    --------
    >>> steps_taken(otherwise=7)  # no MLL-SGD round here
    7
    """
    state = _CURRENT.get()
    return otherwise if state is None else state.steps
