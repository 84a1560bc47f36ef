"""Checks of a worker's reply before any strategy sees it.

A reply is averaged only if every check passes; a reason is one short line.
Sizes are checked before a payload is decoded, decoding errors are caught, and
the decoded shape and dtype must match what the array declares and what the
hub sent (a payload that lies about its shape is refused).
"""

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord

from flwr_multilevel.flower_compat import ErrorCode
from flwr_multilevel.protocol.codec import decode
from flwr_multilevel.protocol.keys import NUM_EXAMPLES, REPLY_METRICS, STEPS

MAX_REASON = 200  # characters of a worker's error text that are kept
NPY_HEADER_BYTES = 4096  # room for the .npy header on top of the raw data


def short(text: object, limit: int = MAX_REASON) -> str:
    r"""Return ``text`` on one line, cut to ``limit`` characters.

    Examples
    --------
    >>> short("a\nb" + "x" * 300, 10)
    'a bxxxxxxx…'
    """
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "…"


def check_array(key: str, array: Array, shape: tuple[int, ...], dtype: str) -> str | None:
    """Return why ``array`` is not a valid copy of a ``shape``/``dtype`` array, or None.

    The payload size is checked before decoding; the decoded array must have
    the declared and the expected shape and dtype, and finite values.

    Examples
    --------
    >>> check_array("w", Array(np.zeros(3, np.float32)), (3,), "float32") is None
    True
    >>> check_array("w", Array(np.zeros(2, np.float32)), (3,), "float32")
    "array 'w': expected shape (3,) (float32), got (2,) (float32)"
    """
    return decode_array(key, array, shape, dtype)[0]


def decode_array(
    key: str, array: Array, shape: tuple[int, ...], dtype: str
) -> tuple[str | None, np.ndarray | None]:
    """Return ``(None, values)`` for a valid ``shape``/``dtype`` array, else ``(why, None)``.

    The checks of :func:`check_array`; the values are read-only and decoded once.
    """
    if tuple(array.shape) != shape or array.dtype != dtype:
        got = f"{tuple(array.shape)} ({array.dtype})"
        return f"array '{key}': expected shape {shape} ({dtype}), got {got}", None
    limit = math.prod(shape) * np.dtype(dtype).itemsize + NPY_HEADER_BYTES
    if len(array.data) > limit:
        return f"array '{key}': payload of {len(array.data)} bytes, at most {limit} expected", None
    try:
        values = decode(array, shape, dtype)
    except Exception as err:  # pylint: disable=broad-except
        return f"array '{key}': payload does not decode ({short(type(err).__name__)})", None
    if values.shape != shape or values.dtype != np.dtype(dtype):
        return (
            f"array '{key}': payload holds shape {values.shape} ({values.dtype}), "
            f"declared {shape} ({dtype})"
        ), None
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        return f"array '{key}' holds NaN or Inf", None
    return None, values


def finite_number(metrics: MetricRecord, key: str) -> float | None:
    """Return ``metrics[key]`` as a float if it is one finite number, else None."""
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def check_reply(
    reply: Message, expected: Mapping[str, tuple[tuple[int, ...], str]], max_steps: int
) -> str | None:
    """Return why a worker's reply must not be averaged, or None if it may.

    Parameters
    ----------
    reply : Message
        The worker's reply to a train message.
    expected : Mapping[str, tuple[tuple[int, ...], str]]
        Array key -> (shape, dtype) of the model the hub sent.
    max_steps : int
        Most gradient steps a worker can take in a round (tau).

    Returns
    -------
    str | None
        A one-line reason, or None for a valid reply.
    """
    return decode_reply(reply, expected, max_steps).reason


class CheckedReply(NamedTuple):
    """What :func:`decode_reply` found: a reason to refuse, or the reply's parts."""

    reason: str | None
    arrays: ArrayRecord | None = None
    metrics: MetricRecord | None = None
    values: dict[str, np.ndarray] | None = None  # decoded, read-only


def decode_reply(
    reply: Message, expected: Mapping[str, tuple[tuple[int, ...], str]], max_steps: int
) -> CheckedReply:
    """Check a reply as :func:`check_reply` does; return its records and decoded arrays.

    Every array is decoded once here, so the hub can hand the values on
    instead of decoding again.
    """
    if reply.has_error():
        if reply.error.code == ErrorCode.MESSAGE_UNAVAILABLE:  # it never ran, or ran too long
            return CheckedReply(short(reply.error.reason))
        return CheckedReply(f"the worker failed: {short(reply.error.reason)}")
    array_records, metric_records = [], []
    for record in reply.content.values():  # one pass: Flower's views rebuild on every access
        if isinstance(record, ArrayRecord):
            array_records.append(record)
        elif isinstance(record, MetricRecord):
            metric_records.append(record)
    if len(array_records) != 1 or len(metric_records) != 1:
        return CheckedReply("expected exactly one ArrayRecord and one MetricRecord")
    arrays, metrics = array_records[0], metric_records[0]
    if set(arrays.keys()) != set(expected):
        return CheckedReply(
            short(f"expected arrays {sorted(expected)}, got {sorted(arrays.keys())}")
        )
    values: dict[str, np.ndarray] = {}
    for key, (shape, dtype) in expected.items():
        reason, decoded = decode_array(key, arrays[key], shape, dtype)
        if reason is not None or decoded is None:
            return CheckedReply(reason)
        values[key] = decoded
    for key in REPLY_METRICS:
        if finite_number(metrics, key) is None:
            return CheckedReply(
                short(f"metric '{key}': expected a finite number, got {metrics.get(key)!r}")
            )
    examples = float(metrics[NUM_EXAMPLES])  # type: ignore[arg-type]  # checked above
    if examples <= 0:
        return CheckedReply(f"metric '{NUM_EXAMPLES}': expected a number > 0, got {examples!r}")
    steps = float(metrics[STEPS])  # type: ignore[arg-type]
    if steps != int(steps) or not 0 <= steps <= max_steps:
        return CheckedReply(
            f"metric '{STEPS}': expected an integer in [0, {max_steps}], got {steps!r}"
        )
    return CheckedReply(None, arrays, metrics, values)
