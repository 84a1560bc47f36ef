"""Stack hub models (ArrayRecords) into one float64 matrix and back."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message


@dataclass(frozen=True)
class Layout:
    """Keys, shapes and dtypes of a model's arrays, in order."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @property
    def sizes(self) -> list[int]:
        """Number of entries of each array."""
        return [int(np.prod(s)) for s in self.shapes]


def stack(records: Sequence[ArrayRecord]) -> tuple[np.ndarray, Layout]:
    """Return a ``len(records) x n`` float64 matrix, one flattened model per row.

    All records must have the layout of the first one.
    """
    first = [records[0][k].numpy() for k in records[0].keys()]
    layout = Layout(
        tuple(records[0].keys()), tuple(a.shape for a in first), tuple(a.dtype for a in first)
    )
    rows = [
        np.concatenate([rec[k].numpy().ravel().astype(np.float64) for k in layout.keys])
        for rec in records
    ]
    return np.stack(rows), layout


def unstack(matrix: np.ndarray, layout: Layout) -> list[ArrayRecord]:
    """Inverse of :func:`stack`: one ArrayRecord per row, in the original dtypes.

    Integer arrays (BatchNorm's counters, say) are rounded to the nearest integer.
    """
    bounds = np.cumsum([0, *layout.sizes])
    records = []
    for row in np.atleast_2d(matrix):
        arrays = {}
        for i, key in enumerate(layout.keys):
            values = row[bounds[i] : bounds[i + 1]].reshape(layout.shapes[i])
            if np.issubdtype(layout.dtypes[i], np.integer):
                values = np.rint(values)
            arrays[key] = Array(np.ascontiguousarray(values.astype(layout.dtypes[i])))
        records.append(ArrayRecord(arrays))
    return records


def record_bytes(record: ArrayRecord) -> int:
    """Return the bytes of a record's serialized arrays, as they travel in a Message.

    Each :class:`flwr.app.Array` holds its serialized payload in ``.data``
    (numpy's ``.npy`` format for arrays made from numpy or torch); keys and
    record framing are not counted.

    Examples
    --------
    >>> record_bytes(ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32))})) >= 24
    True
    """
    return sum(len(array.data) for array in record.values())


def message_bytes(message: Message) -> int:
    """Return the bytes of the serialized arrays in a message (0 for an error reply)."""
    if message.has_error():
        return 0
    records = message.content.values()  # not .array_records: that view is rebuilt per access
    return sum(record_bytes(r) for r in records if isinstance(r, ArrayRecord))
