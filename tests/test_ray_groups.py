"""Groups of messages per Ray actor call: the actor's side without Ray, and one real Ray run."""

import os
import threading
from types import SimpleNamespace
from typing import cast

import pytest
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from flwr_multilevel.client_app import load_task
from flwr_multilevel.clients import make_worker_train, multilevel_mod
from flwr_multilevel.engines.ray_groups import GroupActor, group_size
from flwr_multilevel.engines.simulation import run_in_simulation
from flwr_multilevel.experiment.prepare import prepare
from flwr_multilevel.server_app import make_server_app

from .conftest import make_config
from .helpers import read_csv


def _message(node: int) -> Message:
    """A stand-in for a Message: the actor reads its destination only."""
    return cast(Message, SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node)))


def _context() -> Context:
    """A stand-in for a Context: the apps here keep what they saw in it."""
    return cast(Context, {})


def _run(actor: GroupActor, group_id: int, app, n: int, **kw) -> list:  # type: ignore[no-untyped-def]
    """Run a group of n messages to the end; return its outcomes in the order sent."""
    chunks = actor.run_group(
        group_id,
        "k",
        lambda: app,
        [_message(i) for i in range(n)],
        [_context() for _ in range(n)],
        **kw,
    )
    return [outcome for chunk in chunks for outcome in chunk]


def test_group_size_shares_the_queue_between_free_lanes():
    assert [group_size(n, 2) for n in (1, 2, 3, 12, 13)] == [1, 1, 2, 6, 7]
    assert group_size(12, 1) == 12 and group_size(5, 0) == 5  # a lone lane takes all
    assert group_size(10_000, 2) == 64  # capped


def test_every_message_runs_once_in_order_and_an_app_error_stays_with_its_message():
    def app(message, context):  # type: ignore[no-untyped-def]
        if message.metadata.dst_node_id == 2:
            raise ValueError("bad data on node 2")
        context["seen"] = message.metadata.dst_node_id
        return f"reply {message.metadata.dst_node_id}"

    outcomes = _run(GroupActor(), 1, app, 5, yield_every=0.0)  # one chunk per message
    assert [o[0] for o in outcomes] == [0, 1, 2, 3, 4]
    assert [o[1] for o in outcomes] == ["reply 0", "reply 1", None, "reply 3", "reply 4"]
    assert "ValueError" in outcomes[2][3] and "bad data on node 2" in outcomes[2][3]
    assert [o[2].get("seen") for o in outcomes] == [0, 1, None, 3, 4]  # each its own context
    assert all(o[3] == "" for i, o in enumerate(outcomes) if i != 2)


def test_replies_come_in_chunks_and_every_outcome_exactly_once():
    outcomes = _run(GroupActor(), 1, lambda m, c: "ok", 50, yield_every=10.0)
    assert sorted(o[0] for o in outcomes) == list(range(50))


def test_the_app_travels_once_per_actor():
    actor, made = GroupActor(), []

    def app_fn():  # type: ignore[no-untyped-def]
        made.append(1)
        return lambda m, c: "ok"

    for group_id, fn in enumerate([app_fn, None, None]):
        list(actor.run_group(group_id, "run-1", fn, [_message(0)], [_context()]))
    assert len(made) == 1


def test_a_cut_group_starts_no_other_message_and_hands_over_what_is_finished():
    release, running = threading.Event(), threading.Event()
    ran: list[int] = []

    def app(message, context):  # type: ignore[no-untyped-def]
        node = message.metadata.dst_node_id
        ran.append(node)
        if node == 1:  # the slow one
            running.set()
            release.wait(10)
        return node

    actor, outcomes = GroupActor(), []
    worker = threading.Thread(
        target=lambda: outcomes.extend(_run(actor, 7, app, 4, yield_every=60))
    )
    worker.start()
    assert running.wait(10)
    started, finished = actor.cut(7)
    assert started == 2  # messages 0 and 1 were started: 2 and 3 go back to the queue
    assert [o[0] for o in finished] == [0]  # finished but not yet sent: handed over now
    release.set()
    worker.join(10)
    assert [o[0] for o in outcomes] == [1]  # the running one, and nothing sent twice
    assert ran == [0, 1]


def test_a_cut_before_the_group_starts_runs_nothing_and_after_it_ends_requeues_nothing():
    actor = GroupActor()
    assert actor.cut(3) == (0, [])
    assert _run(actor, 3, lambda m, c: "ok", 3) == []
    assert len(_run(actor, 4, lambda m, c: "ok", 3)) == 3
    assert actor.cut(4) == (3, [])  # all 3 started: none to requeue


def _failing_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """Worker 4 raises in every training round."""
    config = msg.content.get("config")
    if isinstance(config, ConfigRecord) and int(config.get("worker-id", -1)) == 4:  # type: ignore[arg-type]
        raise RuntimeError("worker 4 lost its disk")
    return call_next(msg, context)


failing_app = ClientApp(mods=[multilevel_mod, _failing_mod])
failing_app.train()(make_worker_train(load_task))


@pytest.mark.simulation
@pytest.mark.parametrize("groups", [True, False], ids=["groups", "flower-per-message"])
def test_ray_a_failing_worker_fails_alone_in_its_group(tmp_path, groups):
    """12 workers on 2 actors: groups of 6; worker 4's error costs only worker 4.

    The same as Flower's own engine (``simulation.ray_groups=false``) gives.
    """
    cfg = make_config(
        tmp_path, ["simulation.backend=ray", "hubs.count=3", "hubs.workers=4", "rounds=3"]
    )
    outcome: dict = {}
    cpus = os.cpu_count() or 1
    app = make_server_app(prepare(cfg), outcome)
    run_in_simulation(app, failing_app, 12, cpus / 2, groups=groups)
    assert "summary" in outcome, outcome.get("error")
    rounds = read_csv(tmp_path / "run" / "rounds.csv")
    assert [int(r["missing"]) for r in rounds] == [1, 1, 1]
    for row in rounds:
        assert "worker 4: the worker failed" in row["dropped_reasons"]
        if groups:  # Flower's reason starts with Ray's long preamble; the cause is cut off
            assert (
                "RuntimeError" in row["dropped_reasons"]
                and "lost its disk" in row["dropped_reasons"]
            )
        assert "worker 5" not in row["dropped_reasons"]
