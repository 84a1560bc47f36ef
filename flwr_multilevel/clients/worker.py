"""The MLL-SGD worker: tau time steps, one Bernoulli(p_i) draw and at most one SGD step each.

Every random draw of a round comes from generators seeded by
``(seed, server_round, worker_id)``, so results never depend on which process
or in which order Flower's simulation engine runs the workers.
"""

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn
from torch.nn import functional as F

from flwr_multilevel.model.rates import coin_flips
from flwr_multilevel.protocol.codec import array_record, decode, encode
from flwr_multilevel.protocol.keys import (
    ARRAYS,
    BATCH_SIZE,
    LR,
    METRICS,
    NUM_EXAMPLES,
    OPERATING_RATE,
    PARTITION_ID,
    PROXIMAL_MU,
    SEED,
    SERVER_ROUND,
    STEPS,
    TIME_STEPS,
    TRAIN_LOSS,
    WORKER_ID,
)

BATCH_STREAM = 1


class WorkerTask(NamedTuple):
    """What a worker trains: its model object and its fixed local data.

    Attributes
    ----------
    model : torch.nn.Module
        Kept resident between rounds; its weights are overwritten by the hub's.
    features : torch.Tensor
        Local training inputs, first dimension = local examples.
    labels : torch.Tensor
        Local class labels (int64).
    """

    model: nn.Module
    features: torch.Tensor
    labels: torch.Tensor


class Schedule(NamedTuple):
    """The draws of one worker for one round."""

    coins: np.ndarray  # bool, one per time step: take a step?
    batches: np.ndarray  # int, (time steps, batch size) local example indices


# pylint: disable=too-many-arguments
def step_schedule(
    seed: int,
    server_round: int,
    worker_id: int,
    time_steps: int,
    rate: float,
    num_examples: int,
    batch_size: int,
) -> Schedule:
    """Return the coin flips and mini-batches of one worker for one round.

    Coins and mini-batches come from two independent generators, so a worker
    sees the same mini-batch at a given time step whatever its rate.

    Parameters
    ----------
    seed : int
        Experiment seed.
    server_round : int
        Round (1-based); one round is ``time_steps`` time steps.
    worker_id : int
        Global worker index.
    time_steps : int
        tau.
    rate : float
        Operating rate p_i in (0, 1].
    num_examples : int
        Size of the worker's local data set.
    batch_size : int
        Mini-batch size; capped at ``num_examples``.

    Returns
    -------
    Schedule
        ``coins[t]`` says whether a step is taken at time step t,
        ``batches[t]`` which local examples it uses (drawn without
        replacement within the batch).
    """
    batch_rng = np.random.default_rng([seed, server_round, worker_id, BATCH_STREAM])
    coins = coin_flips(seed, server_round, worker_id, time_steps, rate)
    size = min(batch_size, num_examples)
    batches = np.stack(
        [batch_rng.choice(num_examples, size=size, replace=False) for _ in range(time_steps)]
    )
    return Schedule(coins, batches)


def local_sgd(
    task: WorkerTask, schedule: Schedule, lr: float, proximal_mu: float = 0.0
) -> tuple[int, float]:
    """Run the time steps of one round in place on ``task.model``.

    At each time step whose coin came up, take ONE plain SGD step
    ``x <- x - lr * grad`` on that step's mini-batch (cross-entropy loss, plus
    ``proximal_mu / 2 * ||x - x_received||^2`` when FedProx asks for it).

    Returns
    -------
    tuple[int, float]
        Number of steps taken and the mean mini-batch loss over them. With no
        step taken, the loss of the received model on the first mini-batch.
    """
    model, x, y = task
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    model.train()
    losses: list[float] = []
    batches = torch.from_numpy(schedule.batches).to(x.device)  # one transfer per round
    for step in np.flatnonzero(schedule.coins).tolist():
        idx = batches[step]
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        objective = loss
        if anchor:
            objective = loss + proximal_mu / 2 * sum(
                ((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)
            )
        grads = torch.autograd.grad(objective, params)
        with torch.no_grad():
            for param, grad in zip(params, grads, strict=True):
                param.add_(grad, alpha=-lr)  # x <- x - lr * grad, without a temporary
        losses.append(loss.item())
    if not losses:
        with torch.no_grad():
            idx = batches[0]
            return 0, float(F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx)))
    return len(losses), sum(losses) / len(losses)


def config_number(config: ConfigRecord, key: str, default: float | None = None) -> float:
    """Return a numeric config entry (``default`` if absent and given)."""
    value = config.get(key, default)
    if isinstance(value, (list, bytes)) or value is None:
        raise ValueError(f"config entry '{key}': expected a number, got {value!r}")
    return float(value)


def _config_of(msg: Message) -> ConfigRecord:
    records = [r for r in msg.content.values() if isinstance(r, ConfigRecord)]
    if len(records) != 1:
        raise ValueError(f"expected one ConfigRecord in the train message, got {len(records)}")
    return records[0]


@lru_cache(maxsize=64)
def _numpy_dtype(dtype: torch.dtype) -> str | None:
    """Return the numpy name of a torch dtype (None if numpy has none, e.g. bfloat16)."""
    try:
        return str(torch.empty((), dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        return None


def load_arrays(model: nn.Module, arrays: ArrayRecord) -> None:
    """Load ``arrays`` into ``model``, as ``load_state_dict(arrays.to_torch_state_dict())`` does.

    Arrays in the model's own layout are decoded without parsing their
    headers and copied in place; anything else (other keys, shapes or dtypes)
    takes the strict ``load_state_dict`` path, which raises as it always has.

    Examples
    --------
    >>> model = nn.Linear(2, 1)
    >>> ones = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    >>> load_arrays(model, ArrayRecord(ones))
    >>> float(model.bias.detach())
    1.0
    """
    state = model.state_dict()
    values = {}
    if set(arrays.keys()) == set(state):
        for key, tensor in state.items():
            array, dtype, shape = arrays[key], _numpy_dtype(tensor.dtype), tuple(tensor.shape)
            if dtype is None or array.dtype != dtype or tuple(array.shape) != shape:
                break
            decoded = decode(array, shape, dtype)
            if decoded.dtype != np.dtype(dtype) or decoded.shape != shape:
                break
            values[key] = decoded
    if len(values) != len(state) or not state:
        model.load_state_dict(arrays.to_torch_state_dict())
        return
    with torch.no_grad():
        for key, tensor in state.items():
            if tensor.device.type == "cpu":
                tensor.numpy()[...] = values[key]  # one copy into the model's own memory
            else:
                tensor.copy_(torch.from_numpy(values[key].copy()))


def reply_arrays(model: nn.Module) -> ArrayRecord:
    """Return ``ArrayRecord(model.state_dict())`` (the same payload bytes), built faster."""
    return array_record(
        (k, encode(v.detach().cpu().numpy())) for k, v in model.state_dict().items()
    )


def make_worker_train(
    load_task: Callable[[ConfigRecord, Context], WorkerTask],
) -> Callable[[Message, Context], Message]:
    """Make a ClientApp ``train`` function that runs MLL-SGD's time steps.

    ``load_task`` gives the worker's model and local data; cache them there
    so that they stay resident between rounds. The message's config must hold
    ``time-steps`` (tau), ``lr``, ``batch-size`` and ``seed``; the hub adds
    ``worker-id`` and ``operating-rate``. Without them (a stock strategy
    driving the app) the worker id is the node's ``partition-id`` and the rate
    is 1.

    Examples
    --------
    >>> from flwr.clientapp import ClientApp
    >>> app = ClientApp()
    >>> def load(config, context):  # your model and data, cached
    ...     x, y = torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)
    ...     return WorkerTask(torch.nn.Linear(4, 2), x, y)
    >>> _ = app.train()(make_worker_train(load))
    """

    def train(msg: Message, context: Context) -> Message:
        config = _config_of(msg)
        arrays = next(r for r in msg.content.values() if isinstance(r, ArrayRecord))
        task = load_task(config, context)
        worker_id = int(
            config_number(config, WORKER_ID, float(context.node_config.get(PARTITION_ID, 0)))
        )
        schedule = step_schedule(
            seed=int(config_number(config, SEED)),
            server_round=int(config_number(config, SERVER_ROUND)),
            worker_id=worker_id,
            time_steps=int(config_number(config, TIME_STEPS)),
            rate=config_number(config, OPERATING_RATE, 1.0),
            num_examples=len(task.labels),
            batch_size=int(config_number(config, BATCH_SIZE)),
        )
        load_arrays(task.model, arrays)
        steps, loss = local_sgd(
            task, schedule, config_number(config, LR), config_number(config, PROXIMAL_MU, 0.0)
        )
        metrics = MetricRecord({NUM_EXAMPLES: len(task.labels), STEPS: steps, TRAIN_LOSS: loss})
        content = RecordDict({ARRAYS: reply_arrays(task.model), METRICS: metrics})
        return Message(content, reply_to=msg)

    return train
