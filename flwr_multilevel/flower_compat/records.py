"""Private Flower names around messages and records: constants, ids, fast paths, serde.

Where a fast path relies on how Flower stores an object (an ``Array``'s fields,
a ``ConfigRecord``'s ``_data``), a probe checks it once: if it fails, one
warning names it and the public (slower, same result) path runs instead.
Names without which nothing correct can run raise FlowerCompatError.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from flwr_multilevel.flower_compat.guard import check_version, compat_error, warn_missing

try:  # constants and types Flower exports from no public module
    from flwr.clientapp.typing import ClientAppCallable
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode, SType
    from flwr.common.serde import array_record_from_proto, array_record_to_proto
    from flwr.proto.recorddict_pb2 import ArrayRecord as ProtoArrayRecord  # pylint: disable=E0611
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as _err:
    raise compat_error(str(_err.name or "a private Flower module"), "cannot be imported") from _err

__all__ = [
    "ClientAppCallable",
    "ErrorCode",
    "Run",
    "SType",
    "act_as_superlink",
    "array_record_from_bytes",
    "array_record_to_bytes",
    "clone_array",
    "config_with_entries",
    "is_flower_metric_aggregation",
    "new_array",
    "set_message_id",
]

A = TypeVar("A", bound=Array)
_checked: set[str] = set()  # the probes that passed (on first use)


def set_message_id(message: Message, message_id: str) -> None:
    """Give ``message`` its id, as Flower's engine and in-memory grid do (it is read-only).

    Raises
    ------
    FlowerCompatError
        ``Metadata.message_id`` no longer reads ``Metadata._message_id``.
    """
    message.metadata.__dict__["_message_id"] = message_id
    if "message_id" not in _checked:
        check_version()
        try:
            ok = message.metadata.message_id == message_id
        except Exception:  # pylint: disable=broad-except  # any change of Metadata's shape
            ok = False
        if not ok:
            raise compat_error("Metadata._message_id", "no longer holds Metadata.message_id")
        _checked.add("message_id")


def act_as_superlink(run_id: int, task_id: int) -> None:
    """Make messages built in this process come from the SuperLink in run ``run_id``.

    ``Message(...)`` reads its run and sender from Flower's ``TaskIdentity``,
    which Flower's runtime sets; an in-process grid sets it itself.

    Raises
    ------
    FlowerCompatError
        ``TaskIdentity`` no longer holds the run, task and node ids.
    """
    check_version()
    try:
        TaskIdentity.run_id, TaskIdentity.task_id = run_id, task_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        ok = (TaskIdentity.run_id, TaskIdentity.task_id) == (run_id, task_id)
    except (AttributeError, RuntimeError, TypeError):
        ok = False
    if not ok:
        raise compat_error("TaskIdentity.run_id/task_id/node_id", "cannot be set")


@functools.cache
def _array_fields_in_dict() -> bool:
    """Return whether an ``Array`` keeps exactly its four fields in ``__dict__`` (probed once)."""
    check_version()
    fields = ("dtype", "shape", "stype", "data")
    try:
        probe = Array(dtype="float32", shape=(1,), stype=SType.NUMPY, data=b"\0" * 4)
        fast = Array.__new__(Array)
        fast.__dict__.update({f: getattr(probe, f) for f in fields})
        ok = (
            tuple(f.name for f in dataclasses.fields(Array)) == fields
            and all(f in vars(probe) for f in fields)
            and fast == probe
            and fast.object_id == probe.object_id
        )
    except Exception:  # pylint: disable=broad-except  # any change of Array's shape
        ok = False
    if not ok:
        warn_missing("Array's fields in Array.__dict__", "arrays are built through Array(...)")
    return ok


def new_array(dtype: str, shape: tuple[int, ...], stype: str, data: bytes) -> Array:
    """Return ``Array(dtype=, shape=, stype=, data=)`` without its argument checks.

    The caller passes valid fields (``shape`` a tuple of ints).
    """
    if not _array_fields_in_dict():
        return Array(dtype=dtype, shape=shape, stype=stype, data=data)
    array = Array.__new__(Array)
    array.__dict__.update(dtype=dtype, shape=shape, stype=stype, data=data)
    return array


def clone_array(array: Array, cls: type[A]) -> A:
    """Return a ``cls`` (an Array subclass) with ``array``'s fields and payload, not copied."""
    if not _array_fields_in_dict():
        return cls(dtype=array.dtype, shape=array.shape, stype=array.stype, data=array.data)
    clone = cls.__new__(cls)
    clone.__dict__.update(array.__dict__)
    return clone


@functools.cache
def _config_data_in_dict() -> bool:
    """Return whether a ``ConfigRecord`` keeps its entries in ``_data`` (probed once)."""
    check_version()
    try:
        probe = ConfigRecord({"a": 1})
        ok = probe.__dict__.get("_data") == {"a": 1}
        probe.__dict__["_data"] = {"b": 2}
        ok = ok and dict(probe) == {"b": 2}
    except Exception:  # pylint: disable=broad-except  # any change of ConfigRecord's shape
        ok = False
    if not ok:
        warn_missing("ConfigRecord._data", "config copies check every entry again")
    return ok


def config_with_entries(config: ConfigRecord, entries: Mapping[str, Any]) -> ConfigRecord:
    """Return a copy of ``config`` with ``entries`` set; only they are type-checked again."""
    copy = ConfigRecord(dict(entries))  # checks the new entries
    checked = config.__dict__.get("_data") if _config_data_in_dict() else None
    if isinstance(checked, dict):
        copy.__dict__["_data"] = {**checked, **copy.__dict__["_data"]}
        return copy
    return ConfigRecord({**dict(config.items()), **entries})


def array_record_to_bytes(record: ArrayRecord) -> bytes:
    """Return ``record`` serialized as Flower sends it (its ArrayRecord protobuf)."""
    check_version()
    return bytes(array_record_to_proto(record).SerializeToString())


def array_record_from_bytes(payload: bytes) -> ArrayRecord:
    """Return the ArrayRecord of :func:`array_record_to_bytes`'s ``payload``.

    Raises protobuf's DecodeError, or Array's own errors, if it is not one.
    """
    proto = ProtoArrayRecord()
    proto.ParseFromString(payload)
    return array_record_from_proto(proto)


@functools.cache
def _flower_metric_aggregation() -> Callable[..., Any] | None:
    """Return Flower strategies' default metric aggregation (None, warned, if not found)."""
    check_version()
    try:
        # pylint: disable-next=import-outside-toplevel
        from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
    except ImportError:
        warn_missing("strategy_utils.aggregate_metricrecords", "hub averages go through FedAvg")
        return None
    return aggregate_metricrecords


def is_flower_metric_aggregation(function: Any) -> bool:
    """Return whether ``function`` is Flower's default ``aggregate_metricrecords``."""
    default = _flower_metric_aggregation()
    return default is not None and function is default
