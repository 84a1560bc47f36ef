"""Make an existing Flower ClientApp an MLL-SGD worker: one mod, one call in the training loop.

``ClientApp(mods=[multilevel_mod])`` answers the hub's discovery message (which
worker is this node?) and puts ``steps`` in every train reply. Inside the
user's own train function, ``for batch in time_steps(trainloader):`` replaces
the epoch loop: it runs the round's tau time steps, yielding the next batch of
the user's loader at each time step whose Bernoulli(p_i) coin came up. The
coins are seeded by ``(seed, round, worker)``, exactly as in the paper path
(:func:`flwr_multilevel.clients.worker.step_schedule`). The user's model,
optimizer, loss and data loader stay as they are.

Examples
--------
>>> from flwr.clientapp import ClientApp
>>> app = ClientApp(mods=[multilevel_mod])
"""

from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

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
    _coins: np.ndarray | None = None

    @property
    def coins(self) -> np.ndarray:
        """The round's tau coins, one per time step."""
        if self._coins is None:
            self._coins = coin_flips(*self.draw)
        return self._coins


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
    iterator = iter(batches)
    for take in state.coins:
        if not take:
            continue
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError("time_steps: the data loader yielded no batch") from None
        state.steps += 1
        yield batch
