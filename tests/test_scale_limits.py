"""What a round costs grows linearly in workers: the engine's polling and hand-out, bounded."""

import threading
import time
from queue import Queue

import pytest
from flwr.app import Message

from flwr_multilevel.engines.dispatch import Dispatch
from flwr_multilevel.engines.simulation import POLL_SHARE, tune_grid

from .test_timeouts import _pushed


class _Grid:
    """A grid whose reply poll costs ``cost`` seconds (like InMemoryGrid's O(pending) scan)."""

    pull_interval = 0.1

    def __init__(self, clock) -> None:
        self.cost, self.polls, self.clock = 0.0, 0, clock

    def pull_messages(self, message_ids):
        self.polls += 1
        self.clock[0] += self.cost
        return []


def test_reply_polls_take_a_bounded_share_of_the_time(monkeypatch):
    from flwr_multilevel.engines import simulation

    clock = [0.0]
    monkeypatch.setattr(simulation.time, "perf_counter", lambda: clock[0])
    grid = _Grid(clock)
    tune_grid(grid, 0.001)  # type: ignore[arg-type]
    assert grid.pull_interval == 0.001
    grid.cost = 0.02  # many replies pending: the wait grows so polls take <= POLL_SHARE
    grid.pull_messages(["a"])
    assert grid.pull_interval == 0.02 / POLL_SHARE
    grid.cost = 0.0  # the replies came: back to the floor
    grid.pull_messages(["a"])
    assert grid.pull_interval == 0.001 and grid.polls == 2


def test_the_feeder_hands_out_a_round_with_a_few_checks_per_message():
    """A pass runs per stored message; it visits the nodes that got messages, not every node."""
    nodes = 2000

    class State:
        def store_message_ins(self, message):
            return message.metadata.message_id

        def get_message_ins(self, node_id, limit):
            return []

    visits = [0]
    dispatch = Dispatch()
    busy = dispatch.busy

    def counted(node_id):
        visits[0] += 1
        return busy(node_id)

    dispatch.busy = counted  # type: ignore[method-assign]
    queue: Queue[Message]
    state, queue, stop = State(), Queue(), threading.Event()
    feeder = threading.Thread(
        target=dispatch.feeder(60.0), args=(state, queue, {n: n for n in range(nodes)}, stop)
    )
    feeder.start()
    time.sleep(0.2)  # the first pass (every node once) is done
    first = visits[0]
    messages = [_pushed(n, f"m{n}") for n in range(nodes)]
    for message in messages:  # the grid stores a round: each store wakes the feeder
        state.store_message_ins(message)
        time.sleep(0.0002)  # (building the next message): the feeder gets its passes in
    deadline = time.monotonic() + 30
    while queue.qsize() < nodes and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    state.store_message_ins(_pushed(0, "wake"))
    feeder.join(5)
    assert queue.qsize() == nodes
    assert visits[0] - first <= 4 * nodes  # a few visits per message, whatever the passes


def test_a_large_sparse_mixing_matrix_is_applied_by_its_nonzeros():
    import numpy as np
    import torch

    from flwr_multilevel.engines.batched_hubs import average_matrix, mix, mixing_tensor
    from flwr_multilevel.model.mixing import SPARSE_HUBS, is_sparse, mix_models

    hubs = SPARSE_HUBS + 8
    ring = (np.eye(hubs) + np.roll(np.eye(hubs), 1, 0) + np.roll(np.eye(hubs), -1, 0)) / 3
    models = np.random.default_rng(0).normal(size=(hubs, 50))
    assert is_sparse(ring) and not is_sparse(ring[:8, :8])
    dense = ring.T @ models
    np.testing.assert_allclose(mix_models(ring, models), dense, rtol=1e-14, atol=1e-15)
    matrix = mixing_tensor(ring.T)
    assert matrix.is_sparse
    mixed = mix(matrix, {"w": torch.from_numpy(models).float()})["w"]
    np.testing.assert_allclose(mixed.numpy(), dense, rtol=1e-5, atol=1e-6)
    v = torch.full((2 * hubs,), 0.5, dtype=torch.float64)
    hub_of = torch.arange(2 * hubs) // 2
    stacked = {"w": torch.arange(2.0 * hubs)[:, None]}
    averaged = mix(average_matrix(v, hub_of, hubs), stacked)["w"]
    assert averaged[:, 0].tolist() == [2 * d + 0.5 for d in range(hubs)]


def test_many_hubs_on_a_ring_batched_equals_the_message_engine(config):
    from flwr_multilevel.engines.launch import launch
    from flwr_multilevel.experiment.prepare import prepare

    from .helpers import read_csv

    hubs = ["hubs.count=520", "hubs.workers=1", "hubs.graph=ring", "q=1", "rounds=2"]
    runs = {}
    for backend in ("inprocess", "batched"):
        exp = prepare(
            config(
                *hubs,
                "eval.train_examples=500",
                f"simulation.backend={backend}",
                f"output_dir={config().output_dir}-{backend}",
            )
        )
        launch(exp)
        runs[backend] = read_csv(exp.output_dir / "history.csv")
    for a, b in zip(runs["inprocess"], runs["batched"], strict=True):
        for key in ("loss", "accuracy", "consensus"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-7), key


def test_the_messages_stored_before_the_feeder_are_taken_in_one_scan():
    """Asking the LinkState node by node scans every stored message per node: O(N^2)."""

    class State:  # Flower's in-memory LinkState: its store, its lock, its per-node scan
        def __init__(self, nodes):
            self.lock = threading.Lock()
            self.message_ins_store = {f"m{n}": _pushed(n, f"m{n}") for n in range(nodes)}
            self.scans = 0

        def store_message_ins(self, message):
            return message.metadata.message_id

        def get_message_ins(self, node_id, limit):
            self.scans += 1
            return []

    nodes = 500
    queue: Queue[Message]
    dispatch, state, queue, stop = Dispatch(), State(nodes), Queue(), threading.Event()
    feeder = threading.Thread(
        target=dispatch.feeder(60.0), args=(state, queue, {n: n for n in range(nodes)}, stop)
    )
    feeder.start()
    deadline = time.monotonic() + 30
    while queue.qsize() < nodes and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    state.store_message_ins(_pushed(0, "wake"))
    feeder.join(5)
    assert state.scans == 0
    assert sorted(m.metadata.message_id for m in queue.queue) == sorted(state.message_ins_store)
    assert all(m.metadata.delivered_at for m in queue.queue)
