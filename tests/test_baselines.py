"""Every shipped baseline runs a few rounds on the embedded data, on the same engine."""

import pytest

from flwr_multilevel.cli.compare import baseline_names, baseline_path
from flwr_multilevel.engines.launch import launch
from flwr_multilevel.experiment.config import load_config, validate
from flwr_multilevel.experiment.prepare import prepare

from .helpers import read_csv

EXPECTED = {
    "distributed_sgd": dict(hubs=1, tau=1, q=1, wait=True, strategy="FedAvg"),
    "local_sgd": dict(hubs=1, tau=8, q=1, wait=True, strategy="FedAvg"),
    "hl_sgd": dict(hubs=3, tau=4, q=2, wait=True, strategy="FedAvg", graph="complete"),
    "decentralized": dict(hubs=12, tau=8, q=1, wait=False, strategy="FedAvg", workers=1),
    "mll_sgd": dict(hubs=3, tau=4, q=2, wait=False, strategy="FedAvg"),
    "hub_fedprox": dict(hubs=3, tau=4, q=2, wait=False, strategy="FedProx"),
    "hub_fedadam": dict(hubs=3, tau=4, q=2, wait=False, strategy="FedAdam"),
    "hub_fedyogi": dict(hubs=3, tau=4, q=2, wait=False, strategy="FedYogi"),
    "hub_fedavgm": dict(hubs=3, tau=4, q=2, wait=False, strategy="FedAvgM"),
}


def test_every_baseline_is_listed_and_expected():
    assert set(baseline_names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_baseline_runs_on_the_embedded_data(name, tmp_path):
    cfg = validate(
        load_config(
            baseline_path(name),
            ["time_steps=16", "simulation.backend=inprocess", f"output_dir={tmp_path / name}"],
        )
    )
    want = EXPECTED[name]
    assert (cfg.hubs.count, cfg.tau, cfg.q) == (want["hubs"], want["tau"], want["q"])
    assert cfg.wait_for_slowest is want["wait"] and cfg.strategy.name == want["strategy"]
    assert cfg.hubs.graph == want.get("graph", cfg.hubs.graph)
    assert cfg.hubs.workers == want.get("workers", cfg.hubs.workers)
    exp = prepare(cfg)
    assert exp.hierarchy.num_workers == 12  # every baseline has the same workers and data
    summary = launch(exp)
    rounds = read_csv(exp.output_dir / "rounds.csv")
    assert len(rounds) == 16 // cfg.tau
    assert all(r["dropped"] == "0" for r in rounds), rounds[0]["dropped_reasons"]
    assert summary["time_step"] == 16
    assert summary["accuracy"] > 0.3  # learned something in 16 time steps (chance is 0.1)
    if want["wait"]:
        assert summary["steps_taken"] == 16 * 12
        assert summary["time_slot"] > 16
    else:
        assert summary["time_slot"] == 16
        assert summary["steps_taken"] < 16 * 12
    if cfg.hubs.count == 1:
        assert summary["bytes_hub_hub"] == 0
