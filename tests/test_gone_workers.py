"""A worker whose node is gone: the hub goes on with the workers it has, never waits forever."""

import threading

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel.client_app import app
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.errors import WorkerDiscoveryError
from flwr_multilevel.experiment.prepare import build_mllsgd, initial_model, prepare, train_config
from flwr_multilevel.flower_compat import ErrorCode
from flwr_multilevel.strategies.subgrid import SubGrid

from .conftest import make_config

LIMIT_S = 120.0  # a hang fails the test instead of stalling the suite


class GoneGrid(LocalGrid):
    """In-process nodes; ``gone`` nodes are not connected, and messages to them fail at once.

    As a SuperLink does: an offline node is not listed, and a message pushed to
    it gets the grid's own "node unavailable" reply. Like a deployment's grid,
    its node set is not fixed from the start (nodes come and go).
    """

    nodes_fixed = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gone: set[int] = set()
        self.sent_to_gone = 0

    def get_node_ids(self):
        return [n for n in self.contexts if n not in self.gone]

    def push_messages(self, messages):
        messages = list(messages)
        live = [m for m in messages if m.metadata.dst_node_id not in self.gone]
        ids = list(super().push_messages(live))
        for message in messages:
            if message.metadata.dst_node_id in self.gone:
                self.sent_to_gone += 1
                reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "node_unavail"), reply_to=message)
                message_id = f"gone-{self.sent_to_gone}"
                self._replies[message_id] = reply
                ids.append(message_id)
        return ids


def _run(tmp_path, grid_gone_at: dict[int, int], overrides=(), rounds=3, **mll_kwargs):
    """Run 2 hubs x 2 workers in process; node i is gone from round grid_gone_at[i] (0: never)."""
    exp = prepare(
        make_config(tmp_path, ["hubs.count=2", "hubs.workers=2", f"rounds={rounds}", *overrides])
    )
    reports = []
    grid = GoneGrid(app, exp.hierarchy.num_workers)
    nodes = sorted(grid.contexts)
    grid.gone = {nodes[i] for i, r in grid_gone_at.items() if r == 0}

    def on_round(report, models):
        reports.append(report)
        grid.gone |= {nodes[i] for i, r in grid_gone_at.items() if r == report.server_round + 1}

    mll = build_mllsgd(exp, on_round, discovery_timeout=0.5, **mll_kwargs)
    outcome: dict = {}

    def start() -> None:
        try:
            outcome["result"] = mll.start(
                grid,
                initial_model(exp),
                rounds,
                timeout=60.0,
                train_config=ConfigRecord({**train_config(exp)}),
            )
        except Exception as err:  # noqa: BLE001 (handed to the test)
            outcome["error"] = err

    runner = threading.Thread(target=start, daemon=True)
    runner.start()
    runner.join(LIMIT_S)
    assert not runner.is_alive(), "the run hung"
    return reports, outcome, grid


def test_a_stock_strategy_samples_every_node_of_its_hub_connected_or_not():
    grid = GoneGrid(app, 3)
    grid.gone = {1001}
    assert list(SubGrid(grid, [1000, 1001]).get_node_ids()) == [1000, 1001]
    # FedAvg asks for 2 nodes: with the gone node listed it does not wait for it to connect
    messages = FedAvg().configure_train(
        1, initial_model_record(), ConfigRecord(), SubGrid(grid, [1000, 1001])
    )
    assert sorted(m.metadata.dst_node_id for m in messages) == [1000, 1001]


def initial_model_record():
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({"w": Array(np.zeros(2, np.float32))})


def test_a_worker_that_dies_mid_run_is_counted_missing_and_the_run_goes_on(tmp_path):
    """Worker 1's node goes offline after round 1 (hub 0 then has 1 of 2 workers)."""
    reports, outcome, grid = _run(tmp_path, {1: 2})
    assert "error" not in outcome and len(reports) == 3
    assert reports[0].missing == []
    assert [r.missing for r in reports[1:]] == [[1], [1]]
    assert all("node_unavail" in r.dropped[0] for r in reports[1:])
    assert grid.sent_to_gone == 2  # it is still sent its message, every round


def test_a_worker_that_never_came_is_missing_every_round_when_partial_discovery_allows(tmp_path):
    reports, outcome, grid = _run(tmp_path, {3: 0}, partial_discovery=True)
    assert "error" not in outcome and [r.missing for r in reports] == [[3], [3], [3]]
    assert grid.sent_to_gone == 0  # it has no node: nothing is sent to it
    assert all(r.failed_hubs == {} for r in reports)


def test_without_partial_discovery_a_missing_worker_is_a_one_line_error(tmp_path):
    _, outcome, _ = _run(tmp_path, {3: 0})
    assert isinstance(outcome["error"], WorkerDiscoveryError)
    assert "expected 4 nodes (one per worker), found 3" in str(outcome["error"])


@pytest.mark.parametrize(("gone", "min_replies"), [({2: 0, 3: 0}, 0.0), ({3: 0}, 1.0)])
def test_a_hub_below_what_the_model_allows_fails_discovery(tmp_path, gone, min_replies):
    """Hub 1 without any worker, or below hub.min_replies: the run does not start."""
    _, outcome, _ = _run(tmp_path, gone, [f"hub.min_replies={min_replies}"], partial_discovery=True)
    assert isinstance(outcome["error"], WorkerDiscoveryError)


def test_a_hub_whose_workers_are_all_gone_stops_the_run_after_max_failed_rounds(tmp_path):
    """Both of hub 1's workers die after round 1: its rounds fail, the run stops (RunAborted)."""
    from flwr_multilevel.errors import RunAborted

    reports, outcome, _ = _run(tmp_path, {2: 2, 3: 2}, ["hub.max_failed_rounds=2"], rounds=6)
    assert isinstance(outcome["error"], RunAborted)
    assert [sorted(r.failed_hubs) for r in reports] == [[], [1], [1]][: len(reports)]
