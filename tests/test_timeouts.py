"""Timeouts on every backend: a round's deadline holds, and timed-out work does not pile up."""

import os
import time

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

from flwr_multilevel.cli.main import main
from flwr_multilevel.client_app import load_task
from flwr_multilevel.clients import make_worker_train, multilevel_mod
from flwr_multilevel.engines.dispatch import Dispatch
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.engines.simulation import run_in_simulation
from flwr_multilevel.errors import WorkerDiscoveryError
from flwr_multilevel.experiment.prepare import build_mllsgd, initial_model, prepare, train_config
from flwr_multilevel.server_app import make_server_app
from flwr_multilevel.strategies.deadline import one_reply_each
from flwr_multilevel.strategies.discovery import discover_workers

from .conftest import make_config
from .helpers import read_csv

SLOW_WORKER = 0  # its every train message sleeps SLOW_S before training
SLOW_S = 5.0
RAY_TIMEOUT = 2.0


def _slow_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """Worker SLOW_WORKER sleeps SLOW_S seconds in every training round."""
    config = msg.content.get("config")
    if (
        isinstance(config, ConfigRecord)
        and "server-round" in config
        and int(config.get("worker-id", -1)) == SLOW_WORKER  # type: ignore[arg-type]
    ):
        time.sleep(SLOW_S)
    return call_next(msg, context)


slow_app = ClientApp(mods=[multilevel_mod, _slow_mod])
slow_app.train()(make_worker_train(load_task))  # the real worker


@pytest.mark.simulation
def test_ray_a_slow_worker_does_not_starve_the_others(tmp_path):
    """1 of 6 workers takes 2.5x the timeout every round, on 2 Ray actors.

    Timed-out work must not pile up: from round 2 on, the 5 other workers'
    replies all arrive every round (before the fix, work the engine had queued
    ran late and pushed later rounds' replies past their deadline).
    """
    cfg = make_config(
        tmp_path,
        [
            "simulation.backend=ray",
            "hubs.count=2",
            "hubs.workers=3",
            "rounds=4",
            f"simulation.timeout={RAY_TIMEOUT}",
        ],
    )
    exp = prepare(cfg)
    outcome: dict = {}
    cpus = os.cpu_count() or 1
    run_in_simulation(make_server_app(exp, outcome), slow_app, 6, cpus / 2)  # 2 actors
    assert "summary" in outcome, outcome.get("error")
    rounds = read_csv(tmp_path / "run" / "rounds.csv")
    arrived = [6 - int(r["missing"]) for r in rounds]
    print("replies per round:", arrived)
    assert len(rounds) == 4
    assert all(n == 5 for n in arrived[1:]), arrived
    for row in rounds[1:]:
        assert "worker 0" in row["dropped_reasons"] and "timed out" in row["dropped_reasons"]


# ---- in-process: the round's deadline, on a clock the test moves ----


class FakeClock:
    """``time.monotonic`` for a LocalGrid; a slow worker moves it on."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = FakeClock()
LATE = {"worker": 1, "round": 1}  # this worker overruns the deadline in this round
RAISE: dict[str, object] = {"workers": (), "round": 1}  # these workers fail in this round
CALLS: list[tuple[int, int]] = []  # (round, worker) of every train message the app ran


def _late_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    config = msg.content.get("config")
    if isinstance(config, ConfigRecord) and "server-round" in config:
        server_round, worker = int(config["server-round"]), int(config["worker-id"])  # type: ignore[arg-type]
        CALLS.append((server_round, worker))
        if (server_round, worker) == (LATE["round"], LATE["worker"]):
            CLOCK.now += 1000.0  # it "runs" far past any deadline
        if server_round == RAISE["round"] and worker in RAISE["workers"]:  # type: ignore[operator]
            raise RuntimeError("absent")
    return call_next(msg, context)


late_app = ClientApp(mods=[multilevel_mod, _late_mod])
late_app.train()(make_worker_train(load_task))
echo_app = ClientApp(mods=[_late_mod])  # replies at once, after the late mod


@echo_app.train()
def _echo(msg: Message, context: Context) -> Message:
    del context
    return Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=msg)


def _run_in_process(tmp_path, late_worker, raising, missing="stay", rounds=2):
    """Return (round reports, hub models) of an in-process run on the fake clock."""
    cfg = make_config(
        tmp_path / str(len(CALLS)),
        ["hubs.count=2", "hubs.workers=3", f"rounds={rounds}", f"hub.missing={missing}"],
    )
    exp = prepare(cfg)
    reports = []
    mll = build_mllsgd(exp, on_round=lambda report, models: reports.append(report))
    LATE["worker"], RAISE["workers"] = late_worker, raising
    grid = LocalGrid(late_app, exp.hierarchy.num_workers, clock=CLOCK)
    mll.start(
        grid,
        initial_model(exp),
        rounds,
        timeout=60.0,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    return reports, [[a.numpy() for a in mll.models[d].values()] for d in range(2)]


@pytest.mark.parametrize("missing", ["stay", "renormalize"])
def test_in_process_deadline_equals_a_run_where_the_late_workers_took_no_step(tmp_path, missing):
    """Worker 4 overruns round 1's deadline: its reply is discarded, later messages never run.

    They count as missing, each with a one-line "timed out" reason, and the
    hubs treat them per ``hub.missing`` exactly as workers that failed: the
    models equal those of a run where the same workers raised in round 1.
    """
    CALLS.clear()
    reports, models = _run_in_process(tmp_path, late_worker=4, raising=(), missing=missing)
    ran = [w for r, w in CALLS if r == 1]
    assert ran[-1] == 4 and {0, 1, 2} <= set(ran)  # hub 1's messages follow hub 0's
    late = sorted({4} | (set(range(6)) - set(ran)))  # 4, and whatever came after it
    assert sorted(w for r, w in CALLS if r == 2) == list(range(6))  # round 2: no backlog
    first, second = reports
    assert sorted(first.missing) == late and sorted(first.steps) == sorted(set(ran) - {4})
    assert len(first.dropped) == len(late)  # one line per worker, not one per round
    assert all(line.endswith(": timed out: no reply within 60 s") for line in first.dropped)
    assert second.missing == [] and second.dropped == []
    _, reference = _run_in_process(tmp_path, late_worker=-1, raising=late, missing=missing)
    for hub, ref in zip(models, reference, strict=True):
        for got, want in zip(hub, ref, strict=True):
            np.testing.assert_array_equal(got, want)


def test_local_grid_runs_nothing_after_the_deadline_and_discards_a_late_reply():
    CALLS.clear()
    grid = LocalGrid(echo_app, 3, clock=CLOCK)
    LATE["worker"], LATE["round"], RAISE["workers"] = 0, 7, ()
    messages = [
        _train_message(node, worker=i, server_round=7) for i, node in enumerate(grid.contexts)
    ]
    replies = list(grid.send_and_receive(messages, timeout=5.0))
    assert replies == [] and CALLS == [(7, 0)]  # worker 0 overran: no reply, 1 and 2 not run
    CALLS.clear()
    messages = [
        _train_message(node, worker=i, server_round=8) for i, node in enumerate(grid.contexts)
    ]
    replies = list(grid.send_and_receive(messages, timeout=5.0))
    assert len(replies) == 3 and [w for _, w in CALLS] == [0, 1, 2]  # the next round is whole
    LATE["round"] = 1


def test_local_grid_does_not_run_a_message_past_its_ttl():
    CALLS.clear()
    grid = LocalGrid(echo_app, 1, clock=CLOCK)
    [message] = [_train_message(next(iter(grid.contexts)), worker=0, server_round=3)]
    message.metadata.created_at -= 10.0
    message.metadata.ttl = 5.0
    assert list(grid.pull_messages(grid.push_messages([message]))) == [] and CALLS == []


def _train_message(node: int, worker: int, server_round: int) -> Message:
    """A train message the late mod recognises (echo_app replies at once)."""
    config = ConfigRecord({"server-round": server_round, "worker-id": worker})
    return Message(RecordDict({"config": config}), dst_node_id=node, message_type="train")


# ---- the pieces: stand-in replies, and the engine's dispatch ----


def _pushed(node: int, message_id: str, ttl: float = 60.0) -> Message:
    """A message as a grid pushed it (LocalGrid sets the run identity Message needs)."""
    message = LocalGrid(echo_app, 1).create_message(RecordDict(), "train", node, "", ttl=ttl)
    message.metadata.__dict__["_message_id"] = message_id
    return message


def test_every_unanswered_message_gets_its_own_timed_out_reply():
    sent = [_pushed(node, f"m{node}") for node in range(10, 22)]  # 12 workers, none replied
    replies = one_reply_each(sent, [], timeout=3.0)
    assert sorted(r.metadata.src_node_id for r in replies) == list(range(10, 22))
    assert {r.error.reason for r in replies} == {"timed out: no reply within 3 s"}


def test_the_grids_own_replies_are_attributed_to_the_worker():
    sent = [_pushed(10, "a"), _pushed(11, "b"), _pushed(12, "c")]
    answer = Message(RecordDict({"metrics": MetricRecord({"ok": 1})}), reply_to=sent[0])
    expired_stand_in = Message(
        Error(ErrorCode.MESSAGE_UNAVAILABLE, "expired\nat the link"), reply_to=sent[1]
    )
    expired_stand_in.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    offline = Message(Error(ErrorCode.NODE_UNAVAILABLE, "node\noffline"), reply_to=sent[2])
    offline.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    replies = one_reply_each(sent, [answer, expired_stand_in, offline], timeout=2.0)
    by_node = {r.metadata.src_node_id: r for r in replies}
    assert sorted(by_node) == [10, 11, 12] and len(replies) == 3
    assert by_node[10] is answer
    assert by_node[11].error.reason == "timed out: no reply within 2 s"
    assert by_node[12].error.reason == "node offline"  # one line


def test_dispatch_feeds_one_message_per_node_and_skips_expired_work():
    import threading
    from queue import Empty, Queue

    class State:  # the LinkState's get_message_ins, two messages waiting for node 1
        def __init__(self):
            self.waiting = {1: [_pushed(1, "x"), _pushed(1, "y")], 2: [_pushed(2, "z", ttl=1e-6)]}

        def get_message_ins(self, node_id, limit):
            return self.waiting[node_id][:limit] and [self.waiting[node_id].pop(0)]

    queue: Queue[Message]
    dispatch, state, queue, stop = Dispatch(), State(), Queue(), threading.Event()
    feeder = threading.Thread(
        target=dispatch.feeder(0.001), args=(state, queue, {1: 0, 2: 1}, stop)
    )
    feeder.start()
    time.sleep(0.05)
    assert sorted(m.metadata.message_id for m in queue.queue) == ["x", "z"]  # y waits for x
    replies: Queue[Message]
    ran, replies = [], Queue()

    def worker(messages, out, *_):
        for _attempt in range(2):
            try:
                message = messages.get(timeout=0.05)
            except Empty:
                continue
            ran.append(message.metadata.message_id)
            out.put(Message(RecordDict(), reply_to=message))

    dispatch.worker(worker)(queue, replies)  # z expired in the queue: never run
    time.sleep(0.05)
    stop.set()
    feeder.join()
    assert ran[:2] == ["x", "y"] and "z" not in ran  # y was fed once x had replied
    assert [r.metadata.reply_to_message_id for r in replies.queue] == ["x", "y"]


def test_dispatch_takes_the_grids_messages_as_they_are_stored_not_by_scanning():
    """Messages stored while the engine runs reach the queue without get_message_ins.

    Flower's get_message_ins scans every stored message per node (O(N^2) per
    pass); it is asked only once, for what was stored before the feeder began.
    """
    import threading
    from queue import Queue

    class State:  # the LinkState's two entry points, counting the scans
        def __init__(self):
            self.stored, self.scans = [_pushed(1, "early")], 0

        def store_message_ins(self, message):
            self.stored.append(message)
            return message.metadata.message_id

        def get_message_ins(self, node_id, limit):
            self.scans += 1
            for message in self.stored:
                if message.metadata.dst_node_id == node_id and not message.metadata.delivered_at:
                    message.metadata.delivered_at = "now"
                    return [message]
            return []

    queue: Queue[Message]
    dispatch, state, queue, stop = Dispatch(), State(), Queue(), threading.Event()
    feeder = threading.Thread(
        target=dispatch.feeder(60.0), args=(state, queue, {1: 0, 2: 1, 3: 2}, stop)
    )
    feeder.start()
    time.sleep(0.05)
    assert [m.metadata.message_id for m in queue.queue] == ["early"]
    scans = state.scans
    for node, message_id in [(2, "a"), (3, "b"), (2, "c")]:  # the grid pushes a round
        state.store_message_ins(_pushed(node, message_id))
    time.sleep(0.05)  # no poll for 60 s: only the arrival can have woken the feeder
    assert [m.metadata.message_id for m in queue.queue] == ["early", "a", "b"]  # c: node 2 busy
    assert all(m.metadata.delivered_at for m in queue.queue)
    assert state.scans == scans  # nothing scanned after the first pass
    dispatch.finish(2)
    state.store_message_ins(_pushed(3, "d"))  # wakes the feeder: c goes, d waits for b
    time.sleep(0.05)
    stop.set()
    state.store_message_ins(_pushed(1, "wake"))
    feeder.join(5)
    assert not feeder.is_alive()
    assert [m.metadata.message_id for m in queue.queue][:4] == ["early", "a", "b", "c"]
    assert "d" not in [m.metadata.message_id for m in queue.queue]
    assert "store_message_ins" not in vars(state)  # the LinkState's own method again


def test_a_reply_after_its_deadline_is_not_stored():
    from queue import Queue

    replies: Queue[Message]
    dispatch, replies = Dispatch(), Queue()
    dispatch.start(5)
    late = Message(RecordDict(), reply_to=_pushed(5, "m", ttl=1e-6))
    dispatch.worker(lambda messages, out, *_: out.put(late))(Queue(), replies)
    assert replies.empty() and not dispatch.busy(5)  # dropped, and the node is free again


# ---- discovery: its own timeout, and one line when it fails ----


def _mute_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    if context.node_config["partition-id"] == 1:
        CLOCK.now += 1000.0  # node 1 answers far too late
    return call_next(msg, context)


mute_app = ClientApp(mods=[_mute_mod, multilevel_mod])
mute_app.train()(_echo)


def test_discovery_names_the_nodes_that_did_not_answer_in_time():
    grid = LocalGrid(mute_app, 3, clock=CLOCK)
    with pytest.raises(WorkerDiscoveryError) as caught:
        discover_workers(grid, [0, 1, 2], timeout=5.0)
    assert str(caught.value) == (
        "2 of 3 nodes did not answer the discovery within 5 s (first: node 1001)"
    )


def test_a_failed_discovery_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    import flwr_multilevel.engines.launch

    monkeypatch.setattr(flwr_multilevel.engines.launch, "client_app", echo_app)  # no multilevel_mod
    status = main(
        ["run", "simulation.backend=inprocess", "rounds=1", f"output_dir={tmp_path / 'run'}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and "Traceback" not in "\n".join(err)
    assert err[-1] == "flwr-multilevel: error: node 1000 answered the discovery without a worker-id"
