"""An existing Flower app becomes multi-level with at most 10 changed lines, and trains."""

import difflib
import importlib
import sys
from pathlib import Path

import pytest
import tomllib
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.strategies import MLLSGD

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ORIGINAL, MULTILEVEL = EXAMPLES / "quickstart_pytorch", EXAMPLES / "quickstart_multilevel"


def app_files(root: Path) -> dict[str, list[str]]:
    return {
        str(p.relative_to(root)): p.read_text().splitlines()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts
    }


def test_adoption_takes_at_most_10_changed_lines():
    before, after = app_files(ORIGINAL), app_files(MULTILEVEL)
    assert sorted(before) == sorted(after)  # no new module, none removed
    changed = removed = 0
    for name in before:
        for line in difflib.unified_diff(before[name], after[name], lineterm="", n=0):
            if line.startswith("+") and not line.startswith("+++"):
                changed += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
    assert changed <= 10, f"{changed} lines added or changed"
    assert removed <= changed  # lines were edited in place, nothing of the user's dropped
    assert changed >= 6  # the test really compares the two apps


@pytest.fixture
def example_app(monkeypatch):
    """Import the multi-level copy of the app (package ``pytorchexample``)."""
    monkeypatch.syspath_prepend(str(MULTILEVEL))
    for name in [m for m in sys.modules if m.startswith("pytorchexample")]:
        monkeypatch.delitem(sys.modules, name)
    client = importlib.import_module("pytorchexample.client_app")
    server = importlib.import_module("pytorchexample.server_app")
    yield client, server
    for name in [m for m in sys.modules if m.startswith("pytorchexample")]:
        del sys.modules[name]


def run_config(tmp_path) -> dict:
    with (MULTILEVEL / "pyproject.toml").open("rb") as file:
        config = tomllib.load(file)["tool"]["flwr"]["app"]["config"]
    return {**config, "model-path": str(tmp_path / "final_model.pt")}


def test_the_adopted_app_runs_mll_sgd_with_its_own_train_function(example_app, tmp_path):
    client, server = example_app
    config = run_config(tmp_path)
    grid = LocalGrid(client.app, 4, run_config=config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    server.main(grid, context)  # the user's own ServerApp, unchanged but for the strategy line
    assert (tmp_path / "final_model.pt").is_file()

    # the same strategy, driven directly, to look at its Result
    task = importlib.import_module("pytorchexample.task")
    strategy = MLLSGD.from_run_config(FedAvg(fraction_evaluate=1.0), config)
    assert (strategy.sizes, strategy.tau, strategy.q) == ((2, 2), 8, 2)
    initial = ArrayRecord(task.Net().state_dict())
    result = strategy.start(
        grid=LocalGrid(client.app, 4, run_config=config),
        initial_arrays=initial,
        train_config=ConfigRecord({"lr": 0.01}),
        num_rounds=4,
        evaluate_fn=server.global_evaluate,
    )
    steps = [int(result.train_metrics_clientapp[r]["steps"]) for r in range(1, 5)]
    assert all(0 < s < 4 * 8 for s in steps)  # rates < 1: fewer than tau steps for some
    assert "train_loss" in result.train_metrics_clientapp[4]  # the user's own metric
    assert "hub1-train_loss" in result.train_metrics_clientapp[4]
    assert "consensus" in result.train_metrics_clientapp[4]
    # the app's own federated evaluate handler ran on the workers' held-out data
    assert result.evaluate_metrics_clientapp[4]["eval_acc"] > 0.5
    first, last = result.evaluate_metrics_serverapp[0], result.evaluate_metrics_serverapp[4]
    assert last["accuracy"] > first["accuracy"] + 0.3  # u learned


def test_the_mod_answers_discovery_and_counts_steps_on_zero_step_rounds(example_app, tmp_path):
    client, _ = example_app
    config = run_config(tmp_path)
    task = importlib.import_module("pytorchexample.task")
    # a worker with a tiny rate: most rounds it takes no step, and its reply says 0
    strategy = MLLSGD(FedAvg(), hubs=[2], tau=2, rates=[1.0, 0.01], evaluate_every=0)
    strategy.start(
        grid=LocalGrid(client.app, 2, run_config=config),
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        train_config=ConfigRecord({"lr": 0.01}),
        num_rounds=1,
    )
    assert strategy.report.steps == {0: 2, 1: 0} and not strategy.report.dropped


def test_a_bad_train_config_or_network_fails_before_round_1():
    strategy = MLLSGD(FedAvg(), hubs=[2, 2], tau=4)
    with pytest.raises(ValueError, match="'time-steps' must equal tau=4"):
        strategy.check_train_config(ConfigRecord({"time-steps": 3}))
    with pytest.raises(ValueError, match="'worker-id' is set by each hub"):
        strategy.check_train_config(ConfigRecord({"worker-id": 3}))
    assert strategy.check_train_config(None)["seed"] == 0  # filled in
    with pytest.raises(ValueError, match="graph: "):
        MLLSGD(FedAvg(), hubs=[2, 2], graph="ring")  # a ring needs 3 hubs
    with pytest.raises(ValueError, match="rates: expected"):
        MLLSGD(FedAvg(), hubs=[2, 2], rates=[1.0, 0.5])
    with pytest.raises(ValueError, match="hubs: expected"):
        MLLSGD(FedAvg(), hubs="2,x")
