"""flower_compat: each touch of Flower's internals fits the installed Flower, and fails loudly.

For each patch: the names it patches exist with the expected shape in the
installed Flower, the patch is in place inside its block and gone after; when
a name is missing (deleted here with monkeypatch) it raises FlowerCompatError
or logs one warning naming it. And no private Flower name is touched anywhere
in flwr_multilevel outside flower_compat.
"""

import ast
import importlib
import inspect
import io
import logging
import re
import tokenize
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel import flower_compat
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.errors import FlowerCompatError
from flwr_multilevel.flower_compat import engine, guard, records, run_config

VCE_API = "flwr.server.superlink.fleet.vce.vce_api"
RAY_BACKEND = "flwr.server.superlink.fleet.vce.backend.raybackend"
PACKAGE = Path(flower_compat.__file__).parents[1]


@pytest.fixture(autouse=True)
def fresh_checks():
    """Every test sees the first use of each check (and leaves none behind)."""

    def clear():
        guard.check_version.cache_clear()
        guard._warned.clear()
        records._checked.clear()
        records._array_fields_in_dict.cache_clear()
        records._config_data_in_dict.cache_clear()
        records._flower_metric_aggregation.cache_clear()

    clear()
    yield
    clear()


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def message(node: int = 1000) -> Message:
    app = cast(ClientApp, lambda m, c: m)  # a stand-in: it only makes messages here
    return LocalGrid(app, 1).create_message(RecordDict(), "train", node, "")


# ---- the version guard ----


def test_the_installed_flower_is_in_the_tested_range(caplog):
    assert flower_compat.TESTED == ">=1.42,<1.43"
    assert guard.in_tested_range(flower_compat.installed_flower())
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert flower_compat.check_version()
    assert warnings_in(caplog) == []


def test_a_flower_outside_the_tested_range_warns_once_at_first_use(monkeypatch, caplog):
    monkeypatch.setattr(guard, "installed_flower", lambda: "1.43.0")
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert not flower_compat.check_version()
        records.config_with_entries(ConfigRecord({"a": 1}), {"b": 2})  # a use: no second one
        flower_compat.check_version()
    [warning] = warnings_in(caplog)
    assert "flwr>=1.42,<1.43" in warning and "flwr 1.43.0 is installed" in warning


def test_a_missing_name_warns_once_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        guard.warn_missing("Some.name", "the slow path runs")
        guard.warn_missing("Some.name", "the slow path runs")
    [warning] = warnings_in(caplog)
    assert "Some.name" in warning and "the slow path runs" in warning


# ---- the engine swaps ----


def test_the_engine_has_the_feeder_and_worker_flower_compat_swaps():
    vce_api = importlib.import_module(VCE_API)
    assert guard.shape_problem(vce_api, "add_messages_to_queue", engine.FEEDER_PARAMS) is None
    assert guard.shape_problem(vce_api, "worker", engine.WORKER_PARAMS) is None
    assert guard.looks_up(vce_api.run_api, "add_messages_to_queue")
    assert guard.looks_up(vce_api.run_api, "worker")
    link_state = importlib.import_module("flwr.server.superlink.linkstate").LinkState
    assert list(inspect.signature(link_state.get_message_ins).parameters)[1:3] == [
        "node_id",
        "limit",
    ]
    assert list(inspect.signature(link_state.store_message_ins).parameters)[1:] == ["message"]


def test_the_feeder_and_worker_are_swapped_inside_the_block_only():
    vce_api = importlib.import_module(VCE_API)
    feeder, worker = vce_api.add_messages_to_queue, vce_api.worker

    def ours(*args):
        return None

    seen = []

    def wrap(flowers):
        seen.append(flowers)
        return ours

    with flower_compat.engine_feeder(ours):
        with flower_compat.engine_worker(wrap):
            assert vce_api.add_messages_to_queue is ours and vce_api.worker is ours
    assert seen == [worker]  # the wrapper got Flower's own worker
    assert vce_api.add_messages_to_queue is feeder and vce_api.worker is worker
    with pytest.raises(KeyError), flower_compat.engine_feeder(ours):
        raise KeyError("the run failed")
    assert vce_api.add_messages_to_queue is feeder  # put back on the way out


@pytest.mark.parametrize("name", ["add_messages_to_queue", "worker", "run_api"])
def test_an_engine_without_the_feeder_or_worker_raises(monkeypatch, name):
    vce_api = importlib.import_module(VCE_API)
    monkeypatch.delattr(vce_api, name)
    swap: Callable[..., AbstractContextManager[None]] = (
        flower_compat.engine_feeder if name != "worker" else flower_compat.engine_worker
    )
    with pytest.raises(FlowerCompatError, match=name if name != "run_api" else "no longer calls"):
        with swap(lambda *a: None):
            pass


def test_an_engine_whose_worker_changed_its_arguments_raises(monkeypatch):
    vce_api = importlib.import_module(VCE_API)
    monkeypatch.setattr(vce_api, "worker", lambda queue, backend: None)
    with pytest.raises(FlowerCompatError, match=r"worker takes \(queue, backend\)"):
        with flower_compat.engine_worker(lambda flowers: flowers):
            pass


def test_an_engine_that_no_longer_calls_the_feeder_raises(monkeypatch):
    vce_api = importlib.import_module(VCE_API)
    monkeypatch.setattr(vce_api, "run_api", lambda *args: None)
    with pytest.raises(FlowerCompatError, match="run_api no longer calls add_messages_to_queue"):
        with flower_compat.engine_feeder(lambda *a: None):
            pass


def test_a_linkstate_without_get_message_ins_raises(monkeypatch):
    link_state = importlib.import_module("flwr.server.superlink.linkstate").LinkState
    monkeypatch.delattr(link_state, "get_message_ins")
    with pytest.raises(FlowerCompatError, match="LinkState.get_message_ins"):
        with flower_compat.engine_feeder(lambda *a: None):
            pass


def test_the_actor_class_is_swapped_inside_the_block_only():
    raybackend = importlib.import_module(RAY_BACKEND)
    flowers = raybackend.ClientAppActor
    assert engine.grouped_engine_problem() is None
    assert guard.looks_up(raybackend.RayBackend.build, "ClientAppActor")
    with flower_compat.engine_actor("OurActor") as swapped:
        assert swapped and raybackend.ClientAppActor == "OurActor"
    assert raybackend.ClientAppActor is flowers


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [
        (RAY_BACKEND, None, "ClientAppActor"),
        ("flwr.simulation.ray_transport.ray_actor", "BasicActorPool", "add_actor_back_to_pool"),
        ("flwr.simulation.ray_transport.ray_actor", "BasicActorPool", "submit"),
        ("flwr.compat.client.run_info_store", "DeprecatedRunInfoStore", "retrieve_context"),
        ("flwr.compat.client.run_info_store", "DeprecatedRunInfoStore", "update_context"),
        ("flwr.server.superlink.fleet.vce.metrics", "VceMetrics", "add_clientapp_runtime"),
    ],
)
def test_groups_without_what_they_use_warn_and_leave_flowers_actors(
    monkeypatch, caplog, module, owner, name
):
    target = importlib.import_module(module)
    monkeypatch.delattr(getattr(target, owner) if owner else target, name)
    raybackend = importlib.import_module(RAY_BACKEND)
    before = getattr(raybackend, "ClientAppActor", None)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        with flower_compat.engine_actor("OurActor") as swapped:
            assert not swapped and getattr(raybackend, "ClientAppActor", None) is before
    [warning] = warnings_in(caplog)
    assert name in warning and "one Ray actor call per message" in warning


def test_the_linkstate_tap_follows_stored_messages_and_is_removed_after():
    class State:
        def store_message_ins(self, message):
            return "id-" + message

    state, seen = State(), []
    with flower_compat.tap_stored_messages(state, lambda m, i: seen.append((m, i))) as tapped:
        assert tapped and state.store_message_ins("a") == "id-a"
    assert seen == [("a", "id-a")]
    assert "store_message_ins" not in vars(state)  # the LinkState's own method again


def test_a_linkstate_without_store_message_ins_is_polled_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        with flower_compat.tap_stored_messages(SimpleNamespace(), print) as tapped:
            assert not tapped
    [warning] = warnings_in(caplog)
    assert "LinkState.store_message_ins" in warning


def test_the_engine_objects_are_reached_through_their_expected_names():
    calls: list[object] = []
    store = SimpleNamespace(
        retrieve_context=lambda run_id: ("context", run_id),
        update_context=lambda run_id, context: calls.append(("update", run_id, context)),
    )

    def submit(fn, job):
        calls.append(("submit", fn, job))
        return "future"

    pool = SimpleNamespace(
        submit=submit,
        add_actor_back_to_pool=lambda future: calls.append(("back", future)),
    )
    backend = SimpleNamespace(num_workers=0, pool=pool, app_fn="app")
    msg = message(7)
    assert flower_compat.node_context({7: store}, msg) == ("context", msg.metadata.run_id)
    flower_compat.keep_node_context({7: store}, msg, cast(Context, "new"))
    flower_compat.add_clientapp_runtime(SimpleNamespace(add_clientapp_runtime=calls.append), 0.5)
    assert flower_compat.submit_to_actor(backend, len, ["m"], ["c"]) == "future"
    flower_compat.release_actor(backend, "future")
    assert flower_compat.actor_count(backend) == 1
    assert calls == [
        ("update", msg.metadata.run_id, "new"),
        0.5,
        ("submit", len, ("app", ["m"], "", ["c"])),
        ("back", "future"),
    ]
    state = SimpleNamespace(get_message_ins=lambda node_id, limit: [(node_id, limit)])
    assert flower_compat.next_message_ins(state, 3) == [(3, 1)]


def test_the_grid_poll_interval_is_set_where_flowers_grid_has_it(caplog):
    inmemory = importlib.import_module("flwr.superlink.grid.inmemory_grid").InMemoryGrid
    assert "pull_interval" in inspect.signature(inmemory).parameters
    polling = SimpleNamespace(pull_interval=0.1)
    flower_compat.set_grid_pull_interval(polling, 0.01)
    assert polling.pull_interval == 0.01

    class InMemoryGrid:  # a Flower whose in-memory grid lost the setting
        pass

    with caplog.at_level(logging.WARNING, logger="flwr"):
        flower_compat.set_grid_pull_interval(InMemoryGrid(), 0.01)
        flower_compat.set_grid_pull_interval(SimpleNamespace(), 0.01)  # another grid: silent
    [warning] = warnings_in(caplog)
    assert "InMemoryGrid.pull_interval" in warning


# ---- messages and records ----


def test_a_message_gets_its_id_and_a_flower_that_moved_it_raises(monkeypatch):
    msg = message()
    flower_compat.set_message_id(msg, "m-1")
    assert msg.metadata.message_id == "m-1"
    records._checked.clear()
    metadata = type(msg.metadata)
    monkeypatch.setattr(metadata, "message_id", property(lambda self: self.__dict__["_id"]))
    with pytest.raises(FlowerCompatError, match="Metadata._message_id"):
        flower_compat.set_message_id(message(), "m-2")


def test_the_superlink_identity_is_set_and_a_flower_without_it_raises(monkeypatch):
    flower_compat.act_as_superlink(run_id=1, task_id=1)
    assert records.TaskIdentity.run_id == 1 and records.TaskIdentity.task_id == 1
    assert records.TaskIdentity.node_id == records.SUPERLINK_NODE_ID
    monkeypatch.setattr(records, "TaskIdentity", object())  # no settable ids
    with pytest.raises(FlowerCompatError, match="TaskIdentity"):
        flower_compat.act_as_superlink(run_id=1, task_id=1)


def test_fast_arrays_equal_flowers_own():
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    flowers = Array(values)
    fast = flower_compat.new_array(flowers.dtype, flowers.shape, flowers.stype, flowers.data)
    assert type(fast) is Array and fast == flowers and fast.object_id == flowers.object_id
    assert np.array_equal(fast.numpy(), values)

    class Sub(Array):
        pass

    clone = flower_compat.clone_array(flowers, Sub)
    assert type(clone) is Sub and clone.data is flowers.data
    assert (clone.dtype, clone.shape, clone.stype) == (flowers.dtype, flowers.shape, flowers.stype)


def test_arrays_of_a_changed_flower_take_the_public_constructor_with_one_warning(
    monkeypatch, caplog
):
    @dataclass(slots=True)
    class SlottedArray:  # a Flower whose Array keeps its fields in slots
        dtype: str
        shape: tuple
        stype: str
        data: bytes

    monkeypatch.setattr(records, "Array", SlottedArray)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        made = flower_compat.new_array("float32", (1,), "numpy.ndarray", b"\0" * 4)
        flower_compat.new_array("float32", (1,), "numpy.ndarray", b"\0" * 4)
        clone = flower_compat.clone_array(made, cast(type[Array], SlottedArray))
    assert made == SlottedArray("float32", (1,), "numpy.ndarray", b"\0" * 4) == clone
    [warning] = warnings_in(caplog)
    assert "Array's fields" in warning


def test_config_copies_keep_flowers_checks():
    base = ConfigRecord({"lr": 0.1, "sizes": [1, 2]})
    copy = flower_compat.config_with_entries(base, {"worker-id": 3})
    assert dict(copy) == {"lr": 0.1, "sizes": [1, 2], "worker-id": 3} and "worker-id" not in base
    with pytest.raises(TypeError):
        flower_compat.config_with_entries(base, {"bad": object()})


def test_config_copies_of_a_changed_flower_go_the_public_way_with_one_warning(monkeypatch, caplog):
    class PlainRecord(dict):  # a Flower whose ConfigRecord has no _data
        pass

    monkeypatch.setattr(records, "ConfigRecord", PlainRecord)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        copy = flower_compat.config_with_entries(
            cast(ConfigRecord, PlainRecord({"lr": 0.1})), {"w": 3}
        )
        flower_compat.config_with_entries(cast(ConfigRecord, PlainRecord({"lr": 0.1})), {"w": 4})
    assert copy == {"lr": 0.1, "w": 3}
    [warning] = warnings_in(caplog)
    assert "ConfigRecord._data" in warning


def test_array_records_round_trip_as_flowers_protobuf():
    serde = importlib.import_module("flwr.common.serde")
    record = ArrayRecord({"w": Array(np.arange(4, dtype=np.float64))})
    payload = flower_compat.array_record_to_bytes(record)
    assert payload == serde.array_record_to_proto(record).SerializeToString()
    back = flower_compat.array_record_from_bytes(payload)
    assert np.array_equal(back["w"].numpy(), np.arange(4, dtype=np.float64))
    with pytest.raises(Exception):  # noqa: B017  # protobuf's DecodeError
        flower_compat.array_record_from_bytes(b"\xff\xff not a record")


def test_flowers_default_metric_aggregation_is_recognised_or_warned(monkeypatch, caplog):
    utils = importlib.import_module("flwr.serverapp.strategy.strategy_utils")
    assert flower_compat.is_flower_metric_aggregation(FedAvg().train_metrics_aggr_fn)
    assert not flower_compat.is_flower_metric_aggregation(lambda replies, key: None)
    records._flower_metric_aggregation.cache_clear()
    monkeypatch.delattr(utils, "aggregate_metricrecords")
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert not flower_compat.is_flower_metric_aggregation(FedAvg.__init__)
    [warning] = warnings_in(caplog)
    assert "aggregate_metricrecords" in warning


@pytest.mark.parametrize(
    "name", ["flatten_dict", "unflatten_dict", "parse_config_args", "fuse_dicts"]
)
def test_the_run_config_helpers_are_flowers_and_raise_when_missing(monkeypatch, name):
    config = importlib.import_module(run_config.MODULE)
    assert getattr(run_config, name).__name__ == getattr(config, name).__name__
    monkeypatch.delattr(config, name)
    with pytest.raises(FlowerCompatError, match=f"flwr.common.config.{name} is missing"):
        getattr(flower_compat, name)(*([{}] * (2 if name == "fuse_dicts" else 1)))


def test_a_missing_private_module_fails_the_import_with_flower_compat_error(monkeypatch):
    monkeypatch.setitem(importlib.import_module("sys").modules, "flwr.common.serde", None)
    try:
        with pytest.raises(FlowerCompatError, match="flwr.common.serde"):
            importlib.reload(records)
    finally:
        monkeypatch.undo()
        importlib.reload(records)


def test_the_records_reexports_are_flowers():
    constant = importlib.import_module("flwr.common.constant")
    assert flower_compat.ErrorCode is constant.ErrorCode and flower_compat.SType is constant.SType
    assert flower_compat.Run is importlib.import_module("flwr.supercore.run").Run


# ---- no private touch outside the door ----

PUBLIC_MODULES = (
    "flwr",
    "flwr.app",
    "flwr.clientapp",
    "flwr.clientapp.mod",
    "flwr.serverapp",
    "flwr.serverapp.strategy",
    "flwr.simulation",
    "flwr.common",
    "flwr.common.logger",
)
# names of Flower's internals (code only: docstrings and comments may name them)
PRIVATE_NAMES = re.compile(
    r"^(__dict__|_data|_message_id|_src_node_id|_dst_node_id|vce_api|raybackend|ClientAppActor"
    r"|add_messages_to_queue|store_message_ins|get_message_ins|TaskIdentity|pull_interval"
    r"|array_record_to_proto|array_record_from_proto|aggregate_metricrecords)$"
)
PRIVATE_STRINGS = re.compile(
    r"^['\"](_data|_message_id|_src_node_id|flwr\.(server|superlink|supercore|proto|compat)\b.*)['\"]$"
)
DOCTEST_IMPORT = re.compile(
    r">>>\s*(?:from\s+(flwr(?:\.\w+)*)\s+import\s+([\w, ]+)|import\s+(flwr(?:\.\w+)*)\b)"
)


def _public(module: str, names: list[str]) -> list[str]:
    """Return what of ``from module import names`` is not public Flower API."""
    if module not in PUBLIC_MODULES:
        return [module]
    exported = getattr(importlib.import_module(module), "__all__", None)
    if module == "flwr" or exported is None:
        return []
    return [f"{module}.{n}" for n in names if n not in exported]


def _import_hits(tree: ast.AST, text: str) -> list[tuple[int, str]]:
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "flwr":
            bad = _public(str(node.module), [a.name for a in node.names])
            hits += [(node.lineno, f"import of {b}") for b in bad]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flwr.") and alias.name not in PUBLIC_MODULES:
                    hits.append((node.lineno, f"import of {alias.name}"))
    for number, line in enumerate(text.splitlines(), 1):
        for found in DOCTEST_IMPORT.finditer(line):
            module = found.group(1) or found.group(3)
            names = [n.strip().split(" as ")[0] for n in (found.group(2) or "").split(",")]
            hits += [(number, f"doctest import of {b}") for b in _public(module, names)]
    return hits


def _code_hits(text: str) -> list[tuple[int, str]]:
    hits = []
    previous = None
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NAME and PRIVATE_NAMES.match(token.string):
            hits.append((token.start[0], f"private Flower name {token.string}"))
        elif token.type == tokenize.NAME and previous == "." and _underscored(token.string):
            hits.append((token.start[0], f"underscored attribute .{token.string}"))
        elif token.type == tokenize.STRING and PRIVATE_STRINGS.match(token.string):
            hits.append((token.start[0], f"private Flower name {token.string}"))
        previous = token.string if token.type == tokenize.OP else None
    return hits


def _underscored(name: str) -> bool:
    """Return whether ``name`` is private by convention (``_x``, not a dunder like ``__name__``)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_attribute(line: str) -> bool:
    """Return whether ``line`` reads an underscored attribute of self, cls or the class itself.

    ``os._exit`` (the standard library's documented immediate exit) counts as one too.
    """
    return bool(re.search(r"\b(self|cls|super\(\))\._|\bos\._exit\(", line))


def test_no_private_flower_name_outside_flower_compat():
    door = PACKAGE / "flower_compat"
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if door in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        found = _import_hits(ast.parse(text), text) + _code_hits(text)
        for number, what in found:
            if what.startswith("underscored") and _own_attribute(lines[number - 1]):
                continue
            hits.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {what}")
    assert not hits, "go through flwr_multilevel.flower_compat:\n" + "\n".join(hits)


def test_the_door_check_sees_the_touches_it_forbids():
    text = (
        "from flwr.server.superlink.fleet.vce import vce_api\n"
        "from flwr.common.constant import ErrorCode\n"
        "from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords\n"
        "from flwr.app import Array, ArrayRecord\n"
        "m.metadata.__dict__['_message_id'] = 1\n"
        "c = config._data\n"
        "x = other._hidden\n"
        "y = self._mine\n"
        '""">>> from flwr.supercore.date import now"""\n'
    )
    found = _import_hits(ast.parse(text), text) + _code_hits(text)
    lines = text.splitlines()
    lines_hit = sorted(
        {n for n, what in found if not (what.startswith("under") and _own_attribute(lines[n - 1]))}
    )
    assert lines_hit == [1, 2, 3, 5, 6, 7, 9]


def test_every_flower_compat_function_is_short():
    """No function of the door has over 60 lines of code (docstring aside)."""
    long = []
    for path in (PACKAGE / "flower_compat").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if body and cast(int, body[-1].end_lineno) - body[0].lineno + 1 > 60:
                    long.append(f"{path.name}:{node.name}")
    assert not long


# ---- the SuperLink application (deploy/superlink.py serves its APIs apart) ----


def test_the_superlink_app_is_built_as_flower_superlink_builds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    serving = flower_compat.superlink_serving(
        ["--insecure", "--host", "127.0.0.3", "--port", "19093", "--isolation", "process"]
    )
    assert (serving.host, serving.port, serving.ssl_certfile) == ("127.0.0.3", 19093, None)
    paths = set(serving.app.openapi()["paths"])
    assert {"/v1/fleet/register-node", "/v1/control/register-node"} <= paths
    assert any(p.startswith("/v1/runtime/") for p in paths)
    assert serving.log_config["version"] == 1


@pytest.mark.parametrize(
    "module, name",
    [
        ("flwr.superlink.cli.flower_superlink", "_parse_superlink_lifespan_config"),
        ("flwr.superlink.cli.flower_superlink", "SuperLinkLifespan"),
        ("flwr.superlink.main", "create_app"),
    ],
)
def test_a_superlink_without_what_it_is_built_from_raises(monkeypatch, module, name):
    monkeypatch.delattr(importlib.import_module(module), name)
    with pytest.raises(FlowerCompatError, match=name):
        flower_compat.superlink_serving(["--insecure"])
