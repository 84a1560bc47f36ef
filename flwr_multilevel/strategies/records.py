"""Records a hub derives from others without changing them: configs, clipped updates, casts."""

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from flwr_multilevel.flower_compat import config_with_entries
from flwr_multilevel.protocol.codec import array_record
from flwr_multilevel.protocol.keys import METRICS, NUM_EXAMPLES, STEPS, WORKER_WEIGHT


def clip_update(reply: Message, model: ArrayRecord, clip_norm: float) -> Message:
    """Return ``reply`` with its update ``x_i - y_d`` clipped to L2 norm ``clip_norm``.

    The reply itself is not modified; an update within the norm is returned as is.
    The norm is computed in float64, so float32 extremes (3e38) cannot overflow it.
    """
    arrays = next(iter(reply.content.array_records.values()))
    clipped = clip_arrays(arrays, model, clip_norm)
    if clipped is arrays:
        return reply
    content = RecordDict(dict(reply.content.items()))
    content[next(iter(reply.content.array_records))] = clipped
    return Message(metadata=reply.metadata, content=content)  # type: ignore[call-overload]


def clip_arrays(arrays: ArrayRecord, model: ArrayRecord, clip_norm: float) -> ArrayRecord:
    """Return ``arrays`` with the update ``arrays - model`` clipped to L2 norm ``clip_norm``.

    ``arrays`` itself is returned when its update is within the norm (see :func:`clip_update`).
    """
    own = {k: model[k].numpy().astype(np.float64) for k in model.keys()}
    update = {k: arrays[k].numpy().astype(np.float64) - own[k] for k in own}
    norm = float(np.sqrt(sum(float(np.sum(u * u)) for u in update.values())))
    if norm <= clip_norm:
        return arrays
    scale = clip_norm / norm
    return ArrayRecord(
        {
            k: Array(np.ascontiguousarray((own[k] + scale * update[k]).astype(model[k].dtype)))
            for k in own
        }
    )


def with_entries(config: ConfigRecord, entries: Mapping[str, Any]) -> ConfigRecord:
    """Return a copy of ``config`` with ``entries`` set (only they are type-checked again).

    The entries of ``config`` passed Flower's checks when they were set, so the
    copy takes them as they are instead of checking every one per worker.

    Examples
    --------
    >>> dict(with_entries(ConfigRecord({"lr": 0.1}), {"worker-id": 3}))
    {'lr': 0.1, 'worker-id': 3}
    """
    return config_with_entries(config, entries)


def as_dtypes(
    arrays: ArrayRecord, expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> ArrayRecord:
    """Return ``arrays`` in the ``expected`` dtypes (integers rounded); itself if they match.

    Adaptive strategies (FedAdam, FedYogi, FedAdagrad) compute their update
    in float64; the hub model keeps the model's own dtypes, so workers,
    gossip and byte counts see the same arrays every round.

    Examples
    --------
    >>> arrays = ArrayRecord({"w": Array(np.array([1.6], np.float64))})
    >>> as_dtypes(arrays, {"w": ((1,), "int32")})["w"].numpy().tolist()
    [2]
    """
    if all(arrays[k].dtype == dtype for k, (_, dtype) in expected.items()):
        return arrays
    cast = {}
    for key, (_, dtype) in expected.items():
        values = arrays[key].numpy()
        if np.issubdtype(np.dtype(dtype), np.integer):
            values = np.rint(values)
        cast[key] = Array(np.ascontiguousarray(values.astype(dtype)))
    return ArrayRecord(cast)


def chain_input(
    reply: Message,
    arrays: ArrayRecord,
    metrics: MetricRecord,
    keys: list[str],
    weight: float,
    arrays_key: str,
) -> Message:
    """Return a message for the chain: the reply's ``arrays``, its metrics ``keys``, ``w_i``.

    Every input carries the same metric keys (those all valid replies hold as
    finite numbers), so no stock strategy meets inconsistent replies.
    """
    record = MetricRecord({k: metrics[k] for k in keys})
    record[WORKER_WEIGHT] = weight
    content = RecordDict({arrays_key: arrays, METRICS: record})
    return Message(metadata=reply.metadata, content=content)  # type: ignore[call-overload]


def stand_in(
    node: int, model: ArrayRecord, keys: list[str], weight: float, arrays_key: str
) -> Message:
    """Return the chain input of a worker that took no step: the hub model ``y_d``, metrics 0.

    Every stand-in holds its own record of ``model``'s arrays: robust rules
    (FedMedian, FedTrimmedAvg, Bulyan) take the arrays out of their inputs,
    which must neither empty the hub's model nor the next stand-in.
    """
    metrics = MetricRecord({k: 0.0 for k in keys})
    metrics[NUM_EXAMPLES], metrics[STEPS] = 0, 0
    metrics[WORKER_WEIGHT] = weight
    sent = Message(RecordDict(), dst_node_id=node, message_type="train")
    own = array_record(model.items())  # the same (immutable) arrays, in a record of its own
    return Message(RecordDict({arrays_key: own, METRICS: metrics}), reply_to=sent)
