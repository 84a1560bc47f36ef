"""An existing Flower app becomes multi-level with the lines the README counts, and trains.

The README's count is ``git diff --no-index --numstat`` of the two example apps, and the test
counts the same way. The converted app runs with its own ``local-epochs``, reports its own train
loss (right, per step), logs as Flower's strategies do, and fails in one line on a mistake.
"""

import importlib
import logging
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import tomllib
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.errors import ConfigError, WorkerDiscoveryError
from flwr_multilevel.model.rates import coin_flips
from flwr_multilevel.strategies import MLLSGD

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ORIGINAL, MULTILEVEL = EXAMPLES / "quickstart_pytorch", EXAMPLES / "quickstart_multilevel"
README = (ROOT / "README.md").read_text()


def app_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts
    )


def numstat() -> tuple[int, int]:
    """Return (added, deleted) lines of ``git diff --no-index --numstat`` between the apps."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    diff = subprocess.run(
        ["git", "diff", "--no-index", "--numstat", "--", str(ORIGINAL), str(MULTILEVEL)],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = [line.split("\t") for line in diff.stdout.splitlines() if "__pycache__" not in line]
    return sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)


def test_the_readme_counts_the_adoption_as_git_diff_numstat_does():
    assert app_files(ORIGINAL) == app_files(MULTILEVEL)  # no new module, none removed
    added, deleted = numstat()
    shown = re.search(r"counts (\d+) lines added and (\d+) deleted", " ".join(README.split()))
    assert shown, "the README states the count"
    assert (added, deleted) == (int(shown[1]), int(shown[2]))
    assert deleted <= added  # lines were edited in place, nothing of the user's dropped
    assert added >= 6  # the test really compares the two apps


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


def test_the_adopted_app_runs_mll_sgd_with_its_own_train_function(example_app, tmp_path, caplog):
    client, server = example_app
    config = run_config(tmp_path)
    grid = LocalGrid(client.app, 4, run_config=config)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
    with caplog.at_level(logging.INFO, logger="flwr"):
        server.main(grid, context)  # the user's own ServerApp, unchanged but for the strategy line
    assert (tmp_path / "final_model.pt").is_file()
    logged = [r.getMessage() for r in caplog.records]
    for head in ("Starting MLLSGD strategy:", "[ROUND 3/3]", "Global evaluation", "Final results:"):
        assert head in logged, head
    rounds = [m for m in logged if m.startswith("\t└──> Aggregated MetricRecord: {'train_loss'")]
    assert len(rounds) == 3  # every round, the app's own key, as it spells it
    assert any(m.startswith("\t├──> steps per worker [8, ") for m in logged)

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
    steps = [int(cast(int, result.train_metrics_clientapp[r]["steps"])) for r in range(1, 5)]
    assert all(0 < s < 4 * 8 for s in steps)  # rates < 1: fewer than tau steps for some
    assert "train_loss" in result.train_metrics_clientapp[4]  # the user's own metric
    worker_steps = cast(list[int], result.train_metrics_clientapp[1]["worker-steps"])
    assert worker_steps[0] == 8  # worker 0 runs at rate 1
    assert "hub1-train_loss" in result.train_metrics_clientapp[4]
    assert "consensus" in result.train_metrics_clientapp[4]
    # the app's own federated evaluate handler ran on the workers' held-out data
    assert cast(float, result.evaluate_metrics_clientapp[4]["eval_acc"]) > 0.5
    first, last = result.evaluate_metrics_serverapp[0], result.evaluate_metrics_serverapp[4]
    assert cast(float, last["accuracy"]) > cast(float, first["accuracy"]) + 0.3  # u learned


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


def coin_steps(config: dict, server_round: int) -> list[int]:
    rates = [float(p) for p in config["rates.values"].split(",")]
    return [
        int(coin_flips(0, server_round, w, config["tau"], p).sum()) for w, p in enumerate(rates)
    ]


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_its_own_local_epochs_take_exactly_the_coin_flipped_steps(example_app, tmp_path, epochs):
    client, server = example_app
    config = {**run_config(tmp_path), "local-epochs": epochs}
    task = importlib.import_module("pytorchexample.task")
    strategy = MLLSGD.from_run_config(FedAvg(fraction_evaluate=0.0), config)
    result = strategy.start(
        grid=LocalGrid(client.app, 4, run_config=config),
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        train_config=ConfigRecord({"lr": 0.01}),
        num_rounds=2,
    )
    for r in (1, 2):
        metrics = result.train_metrics_clientapp[r]
        assert metrics["worker-steps"] == coin_steps(config, r), r
        assert metrics["dropped"] == 0 and metrics["missing"] == 0
    # the app's own loss is a mean over its steps: near ln(10) = 2.30 at the start, not /8
    assert 1.5 < float(cast(float, result.train_metrics_clientapp[1]["train_loss"])) < 2.5


def test_one_hub_at_rate_1_with_tau_one_epoch_is_the_apps_fedavg_bit_for_bit(example_app, tmp_path):
    client, _ = example_app
    config = run_config(tmp_path)
    task = importlib.import_module("pytorchexample.task")
    tau = len(task.load_data(0, 2, config["batch-size"])[0])  # batches per epoch
    torch.manual_seed(0)
    initial = ArrayRecord(task.Net().state_dict())
    results = []
    plain = FedAvg(fraction_evaluate=0.0)  # no evaluation: its Net() would draw from the RNG
    wrapped = MLLSGD(FedAvg(fraction_evaluate=0.0), hubs=[2], tau=tau, evaluate_every=0)
    for strategy in (plain, wrapped):
        torch.manual_seed(1)  # the loaders' shuffles
        random.seed(1)  # the order in which FedAvg samples the nodes (and so they run)
        results.append(
            strategy.start(
                grid=LocalGrid(client.app, 2, run_config=config),
                initial_arrays=initial,
                train_config=ConfigRecord({"lr": 0.01}),
                num_rounds=2,
            )
        )
    fedavg, multilevel = ([a.numpy() for a in r.arrays.values()] for r in results)
    assert all(np.array_equal(a, b) for a, b in zip(fedavg, multilevel, strict=True))
    losses = [r.train_metrics_clientapp[2]["train_loss"] for r in results]
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)  # the same per-step mean


def test_the_readmes_differential_privacy_values_train(example_app, tmp_path):
    client, server = example_app
    found = re.search(r"noise_multiplier=([\d.]+), clipping_norm=([\d.]+)", README)
    assert found, "the README shows a DP example"
    private = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(),
        noise_multiplier=float(found[1]),
        clipping_norm=float(found[2]),
        num_sampled_clients=3,
    )
    task = importlib.import_module("pytorchexample.task")
    rates = [1.0, 0.5, 0.8] * 3  # the README's network
    strategy = MLLSGD(
        private, hubs=[3, 3, 3], graph="ring", tau=4, q=2, rates=rates, evaluate_every=0
    )
    result = strategy.start(
        grid=LocalGrid(client.app, 9, run_config=run_config(tmp_path)),
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        train_config=ConfigRecord({"lr": 0.01}),
        num_rounds=8,
        evaluate_fn=server.global_evaluate,
    )
    losses = [float(cast(float, result.evaluate_metrics_serverapp[r]["loss"])) for r in (0, 8)]
    assert losses[1] < losses[0] - 0.5, losses  # it trains, it does not diverge


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ({"tau": 0}, "tau: expected an integer >= 1, got 0"),
        ({"hubs.workers": "2;2"}, "hubs.workers: expected comma-separated integers"),
        ({"rates.values": "1.0,0.5"}, "rates.values: expected 4 rates (one per worker)"),
    ],
)
def test_a_bad_multilevel_key_fails_at_once_in_one_line(tmp_path, caplog, override, line):
    config = {**run_config(tmp_path), **override}
    began = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(line)) as caught, caplog.at_level(logging.INFO):
        MLLSGD.from_run_config(FedAvg(), config)
    assert time.perf_counter() - began < 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("flwr-multilevel: error: " + line)
    # Flower's runtime then logs the error with its traceback: that record is dropped, and an
    # error nobody logged yet becomes its one line
    caplog.clear()
    flower = logging.getLogger("flwr")
    flower.error("Simulation raised an exception", exc_info=caught.value)
    flower.error("Simulation raised an exception", exc_info=ConfigError("a", "b"))
    assert [r.getMessage() for r in caplog.records] == ["flwr-multilevel: error: a: b"]
    assert all(r.exc_info is None for r in caplog.records)


def _no_mod_app() -> ClientApp:
    app = ClientApp()  # multilevel_mod forgotten

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]  # a discovery message has none: KeyError
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord()}), reply_to=msg)

    return app


def test_forgetting_the_mod_or_nodes_fails_before_training_in_one_line(caplog):
    strategy = MLLSGD(FedAvg(), hubs=[2, 2], tau=4)
    arrays = ArrayRecord()
    with pytest.raises(WorkerDiscoveryError, match="is multilevel_mod in its ClientApp's mods"):
        strategy.start(LocalGrid(_no_mod_app(), 4), arrays, num_rounds=1)
    began = time.perf_counter()
    caplog.clear()
    with pytest.raises(WorkerDiscoveryError) as caught, caplog.at_level(logging.INFO):
        strategy.start(LocalGrid(_no_mod_app(), 2), arrays, num_rounds=1)
    assert time.perf_counter() - began < 5.0  # the node count is final: no 60 s wait
    assert str(caught.value) == (
        "expected 4 nodes (one per worker), the simulation has 2 SuperNodes: "
        'flwr run . --federation-config "num-supernodes=4"'
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"flwr-multilevel: error: {caught.value}"]


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
