"""Fast, exact ``.npy`` encoding and decoding of Flower ``Array`` payloads.

Flower's :meth:`flwr.app.Array.numpy` parses every payload's ``.npy`` header
with ``ast.literal_eval``, and ``Array(ndarray)`` writes it through
``np.save``. When the layout of an array is known in advance (the model the
hub sent, the worker's own model), the header is known too: a payload that
starts with exactly the header ``np.save`` writes for that shape and dtype and
holds exactly that many bytes after it decodes with one ``np.frombuffer``.
Anything else takes Flower's own path, so hostile or foreign payloads are
decoded (or refused) exactly as before. Encoding writes the same bytes as
``np.save`` for C-contiguous arrays and falls back to it otherwise.
"""

import math
from collections.abc import Iterable
from functools import lru_cache
from io import BytesIO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from flwr_multilevel import flower_compat
from flwr_multilevel.flower_compat import SType


@lru_cache(maxsize=256)
def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    r"""Return the ``.npy`` header ``np.save`` writes for a C-ordered ``shape``/``dtype`` array.

    Examples
    --------
    >>> npy_header((2, 3), "float32")[:6]
    b'\x93NUMPY'
    """
    buffer = BytesIO()
    values = np.zeros(shape, dtype=np.dtype(dtype))
    np.save(buffer, values, allow_pickle=False)
    data = buffer.getvalue()
    return data[: len(data) - values.nbytes]


def decode(array: Array, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Return ``array``'s values, read-only, decoding an expected layout without parsing.

    A payload that is exactly ``np.save``'s output for ``shape``/``dtype`` is
    viewed in place; any other payload goes through Flower's ``Array.numpy``
    (which may raise, and may return another shape or dtype: callers check).

    Examples
    --------
    >>> a = Array(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> decode(a, (2, 3), "float32").tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    data = array.data
    if array.stype == SType.NUMPY and isinstance(data, bytes):
        header = npy_header(shape, dtype)
        kind = np.dtype(dtype)
        count = math.prod(shape)
        if (
            kind.kind not in "OV"
            and len(data) == len(header) + count * kind.itemsize
            and data.startswith(header)
        ):
            return np.frombuffer(data, dtype=kind, count=count, offset=len(header)).reshape(shape)
    values = array.numpy()
    values.flags.writeable = False
    return values


def encode(values: np.ndarray) -> Array:
    """Return ``Array(values)``: the same payload bytes as ``np.save``, without its overhead.

    Examples
    --------
    >>> x = np.arange(4, dtype=np.int64)
    >>> encode(x).data == Array(x).data
    True
    """
    if values.dtype.kind in "OV" or not values.flags.c_contiguous:
        return Array(values)
    header = npy_header(tuple(values.shape), values.dtype.str)
    return flower_compat.new_array(
        dtype=str(values.dtype),
        shape=tuple(int(s) for s in values.shape),
        stype=SType.NUMPY,
        data=header + values.tobytes(),
    )


def array_record(items: Iterable[tuple[str, Array]]) -> ArrayRecord:
    """Return an ArrayRecord holding these very Array objects.

    ``ArrayRecord(dict_of_arrays)`` rebuilds every Array; setting them one by
    one keeps them (and what they carry, see :class:`DecodedArray`).

    Examples
    --------
    >>> a = Array(np.zeros(2, np.float32))
    >>> array_record([("w", a)])["w"] is a
    True
    """
    record = ArrayRecord()
    for key, array in items:
        record[key] = array
    return record


class DecodedArray(Array):
    """An :class:`Array` that carries its checked, decoded values.

    ``numpy()`` returns a fresh writable copy of them (as Flower's does, so a
    strategy that changes the result in place changes nothing else) without
    parsing the payload again.
    """

    decoded: tuple[Any, np.ndarray | None]  # (the payload they were decoded from, the values)

    @classmethod
    def wrap(cls, array: Array, values: np.ndarray) -> "DecodedArray":
        """Return ``array`` (same payload and fields) carrying ``values``."""
        wrapped = flower_compat.clone_array(array, cls)
        wrapped.decoded = (array.data, values)
        return wrapped

    def numpy(self) -> Any:
        """Return a copy of the decoded values."""
        data, values = getattr(self, "decoded", (None, None))
        if values is None or data is not self.data:  # the payload was replaced since
            return super().numpy()
        return np.array(values, copy=True)
