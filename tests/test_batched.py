"""The batched simulation path against the message-based engine (same draws, same numbers)."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_multilevel.clients.worker import step_schedule
from flwr_multilevel.engines.batched import simulate
from flwr_multilevel.engines.batched_draws import example_weights, round_draws
from flwr_multilevel.engines.batched_grads import gradient_function
from flwr_multilevel.engines.batched_mllsgd import BatchedMLLSGD
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.models import build_model
from flwr_multilevel.experiment.prepare import initial_model, prepare

from .helpers import flat, run_engine

TOLERANCE = 1e-5
RATES_12 = "rates.values=[0.3,1.0,0.6,0.9,0.5,1.0,0.7,0.4,1.0,0.8,0.35,0.55]"

SMALL_CNN = ["model.name=cnn", "lr=0.1", "hubs.workers=2", "tau=3", "q=2", "batch_size=32"]

CASES = {
    "logreg-equal-unequal-fixed-p-path": [
        "weighting=equal",
        "data.partition=unequal",
        "rates.distribution=fixed",
        "rates.p=0.5",
        "hubs.graph=path",
    ],
    "logreg-datasize-uniform-ring-batch-over-data": [
        "weighting=data_size",
        "data.partition=unequal",
        "rates.low=0.3",
        "hubs.count=4",
        "hubs.workers=3",
        "hubs.graph=ring",
        "batch_size=64",  # the smallest workers hold ~30 examples
    ],
    "logreg-explicit-rates-complete-unequal-hubs": [
        "rates.distribution=explicit",
        RATES_12,
        "hubs.workers=[2,4,6]",
        "hubs.graph=complete",
        "data.partition=unequal",
    ],
    "logreg-one-hub-local-sgd": ["hubs.count=1", "hubs.workers=6", "tau=3", "q=1"],
    "logreg-distributed-sgd-tau-q-1": ["tau=1", "q=1", "rates.distribution=fixed", "rounds=6"],
    "logreg-wait-for-slowest": ["wait_for_slowest=true", "rates.low=0.2", "hubs.graph=ring"],
    "cnn-datasize-unequal-uniform-path-batch-over-data": [
        *SMALL_CNN,
        "weighting=data_size",
        "data.partition=unequal",
        "rates.low=0.3",
        "batch_size=96",  # the smallest of the 6 workers hold ~60 examples
    ],
    "cnn-equal-explicit-complete": [
        *SMALL_CNN,
        "weighting=equal",
        "data.partition=unequal",
        "rates.distribution=explicit",
        "rates.values=[0.3,1.0,0.6,0.9,0.5,0.8]",
        "hubs.graph=complete",
    ],
}


def engine_run(cfg):
    """Engine hub models (flattened) and the steps per worker of every round."""
    steps = []

    def on_round(report, _models):
        steps.append([report.steps[i] for i in sorted(report.steps)])

    exp, models = run_engine(cfg, on_round=on_round)
    return exp, [flat(m) for m in models], np.array(steps)


def batched_run(cfg):
    steps = []

    def on_round(_round, _models, result):
        steps.append(result.steps.copy())

    models = simulate(prepare(cfg), on_round)
    return [flat([a.numpy() for a in m.values()]) for m in models], np.array(steps)


@pytest.mark.parametrize("case", list(CASES))
def test_batched_equals_engine(tmp_path, case):
    overrides = ["rounds=4", *CASES[case]]
    if "model.name=cnn" in CASES[case]:
        overrides[0] = "rounds=2"
    _, expected, expected_steps = engine_run(make(tmp_path / "engine", overrides))
    got, steps = batched_run(make(tmp_path / "batched", overrides))
    assert len(got) == len(expected)
    for hub, (a, b) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=f"hub {hub}")
    np.testing.assert_array_equal(steps, expected_steps)


def make(folder, overrides):
    from .conftest import make_config  # pylint: disable=import-outside-toplevel

    return make_config(folder, overrides)


def direct_runner(exp, schedule=step_schedule, gradients="auto"):
    cfg = exp.cfg
    model = build_model(cfg.model.name, exp.dataset.input_shape, exp.dataset.num_classes)
    return BatchedMLLSGD(
        model,
        exp.dataset.x_train,
        exp.dataset.y_train,
        exp.partitions,
        exp.hierarchy,
        exp.mixing,
        tau=cfg.tau,
        q=cfg.q,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        schedule=schedule,
        wait_for_slowest=bool(cfg.wait_for_slowest),
        gradients=gradients,
    )


def run_direct(exp, runner):
    init = {k: torch.from_numpy(a.numpy()) for k, a in initial_model(exp).items()}
    final = runner.run(init, exp.num_rounds)
    hubs = exp.hierarchy.num_hubs
    return [np.concatenate([final[k][d].numpy().ravel() for k in final]) for d in range(hubs)]


def test_ignoring_the_coins_is_caught(tmp_path):
    """A mutant that steps at every time step (coins ignored) no longer matches the engine."""
    overrides = ["rounds=3", "rates.distribution=fixed", "rates.p=0.5"]
    _, expected, _ = engine_run(make(tmp_path / "engine", overrides))
    exp = prepare(make(tmp_path / "batched", overrides))

    def no_coins(seed, server_round, worker, tau, _rate, n, batch):
        return step_schedule(seed, server_round, worker, tau, 1.0, n, batch)

    right = run_direct(exp, direct_runner(exp))
    mutant = run_direct(exp, direct_runner(exp, schedule=no_coins))
    for a, b in zip(right, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE)
    assert max(np.abs(a - b).max() for a, b in zip(mutant, expected, strict=True)) > 1e-3


def test_vmap_gradients_equal_the_engine_for_the_cnn(tmp_path):
    """The generic torch.func path (any buffer-free model) gives the same CNN numbers."""
    overrides = ["rounds=2", *SMALL_CNN, "batch_size=96", "rates.low=0.3"]
    overrides += ["data.partition=unequal"]
    _, expected, _ = engine_run(make(tmp_path / "engine", overrides))
    exp = prepare(make(tmp_path / "batched", overrides))
    got = run_direct(exp, direct_runner(exp, gradients="vmap"))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE)


def test_round_draws_are_the_workers_own():
    sizes, rates = np.array([5, 40, 12]), np.array([0.5, 1.0, 0.7])
    draws = round_draws(step_schedule, 3, 2, rates, sizes, 6, 8)
    offsets = [0, 5, 45]
    seen = 0
    for t in range(6):
        for worker in range(3):
            coins, batches = step_schedule(3, 2, worker, 6, rates[worker], sizes[worker], 8)
            if not coins[t]:
                continue
            assert draws.active[seen] == worker
            row = draws.rows[seen]
            np.testing.assert_array_equal(row[: batches.shape[1]], batches[t] + offsets[worker])
            assert np.all(row[batches.shape[1] :] == offsets[worker])  # padding
            seen += 1
    assert seen == len(draws.active) == draws.steps.sum() == sum(draws.counts)
    assert draws.rows.shape[1] == 8


def test_example_weights_average_each_workers_own_batch():
    weights = example_weights(np.array([3, 20, 8]), 8)
    assert weights is not None  # worker 0 has fewer than 8 examples
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights[0] > 0).sum() == 3 and (weights[2] > 0).sum() == 8


def test_on_round_true_stops(tmp_path):
    exp = prepare(make(tmp_path, ["rounds=5"]))
    seen = []

    def on_round(server_round, models, result):
        seen.append(server_round)
        return server_round == 2

    models = simulate(exp, on_round)
    assert seen == [1, 2] and len(models) == exp.hierarchy.num_hubs
    assert [m.dtype for m in models[0].values()] == ["float32", "float32"]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["strategy.name=FedProx", "strategy.options={proximal_mu: 0.1}"], "strategy.name"),
        (["strategy.options={fraction_train: 0.5}"], "strategy.options.fraction_train"),
    ],
)
def test_unsupported_settings_are_refused_in_one_line(tmp_path, overrides, key):
    exp = prepare(make(tmp_path, overrides))
    with pytest.raises(ConfigError) as err:
        simulate(exp)
    assert err.value.key == key and "\n" not in str(err.value)


def test_gradient_method_must_fit_the_model():
    model = build_model("logreg", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="simulation.gradients"):
        gradient_function(model, "cnn")
    with pytest.raises(ConfigError, match="simulation.gradients"):
        gradient_function(model, "fast")


def test_gpu_bench_draws_are_the_workers_draws():
    """bench/gpu_fig1.py carries a Flower-free copy of step_schedule; it must not drift."""
    path = Path(__file__).resolve().parent.parent / "bench" / "gpu_fig1.py"
    spec = importlib.util.spec_from_file_location("gpu_fig1", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for args in [(42, 1, 0, 8, 1.0, 1248, 300), (1, 7, 33, 4, 0.4, 50, 64)]:
        ours, theirs = bench.step_schedule(*args), step_schedule(*args)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_batched_backend_writes_the_same_results_folder_as_the_engine(tmp_path):
    from flwr_multilevel.cli.main import main

    common = ["rounds=4", "q=2", "hubs.workers=[1,2,3]", "eval.hubs=true"]
    for backend in ("batched", "inprocess"):
        out = tmp_path / backend
        assert main(["run", *common, f"simulation.backend={backend}", f"output_dir={out}"]) == 0
    for name, exact in (
        (
            "history.csv",
            ("round", "time_step", "time_slot", "steps_taken", "bytes_worker_hub", "bytes_hub_hub"),
        ),
        (
            "rounds.csv",
            ("round", "slots", "gossip", "steps", "bytes_down", "bytes_up", "bytes_hubs"),
        ),
    ):
        with open(tmp_path / "batched" / name) as a, open(tmp_path / "inprocess" / name) as b:
            rows_a, rows_b = list(csv.DictReader(a)), list(csv.DictReader(b))
        assert len(rows_a) == len(rows_b) > 0
        for row_a, row_b in zip(rows_a, rows_b, strict=True):
            for key in exact:
                assert row_a[key] == row_b[key], (name, key)
            if name == "history.csv":
                for key in ("loss", "accuracy", "consensus", "hub1_accuracy"):
                    assert float(row_a[key]) == pytest.approx(float(row_b[key]), abs=1e-5)


def test_batched_backend_refuses_what_it_cannot_run(tmp_path):
    from flwr_multilevel.cli.main import main

    args = ["run", "simulation.backend=batched", f"output_dir={tmp_path / 'x'}"]
    assert main([*args, "strategy.name=FedAdam"]) == 2
