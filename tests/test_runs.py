"""Whole runs: the results folder, the CLI, the simulation engine (Ray), the Flower app config."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from flwr_multilevel.cli.main import main
from flwr_multilevel.experiment.config import default_config, from_run_config

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path):
    with open(path) as file:
        return list(csv.DictReader(file))


def test_results_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            ["run", "simulation.backend=inprocess", "rounds=6", "q=2", "eval.hubs=true"]
            + [f"output_dir={out}"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "final: accuracy" in printed and str(out) in printed
    history = read_csv(out / "history.csv")
    assert [int(r["round"]) for r in history] == [0, 2, 4, 6]
    assert [int(r["time_step"]) for r in history] == [0, 8, 16, 24]
    for column in (
        "loss",
        "accuracy",
        "consensus",
        "steps_taken",
        "hub0_accuracy",
        "hub2_accuracy",
    ):
        assert column in history[0]
    steps = [int(r["steps_taken"]) for r in history]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= 6 * 4 * 12
    assert float(history[-1]["accuracy"]) > float(history[0]["accuracy"])
    rounds = read_csv(out / "rounds.csv")
    assert len(rounds) == 6 and [r["gossip"] for r in rounds] == ["0", "1"] * 3
    assert sum(int(r["steps"]) for r in rounds) == steps[-1]
    parts = json.loads((out / "partition.json").read_text())
    indices = np.concatenate([np.array(v) for v in parts.values()])
    assert len(parts) == 12 and len(indices) == len(set(indices.tolist())) == 1348
    network = json.loads((out / "network.json").read_text())
    assert network["hub_sizes"] == [4, 4, 4] and 0 < network["zeta"] < 1
    assert OmegaConf.load(out / "config.yaml").output_dir == str(out)
    hubs = torch.load(out / "hub_models.pt")
    assert hubs["round"] == 6 and len(hubs["hubs"]) == 3
    init = torch.load(out / "initial_model.pt")
    assert set(init) == set(hubs["hubs"][0]) == {"linear.weight", "linear.bias"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(float(history[-1]["accuracy"]))


def test_pyproject_app_config_is_the_default_config():
    tomllib = pytest.importorskip("tomllib")
    app_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"][
        "config"
    ]
    cfg = from_run_config(app_config)
    default = default_config()
    cfg.output_dir = None
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(default)


def test_config_command_prints_every_key(capsys):
    assert main(["config", "hubs.count=5", "tau=8"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.hubs.count == 5 and printed.tau == 8 and "rates" in printed


@pytest.mark.simulation
def test_simulation_engine_gives_the_same_numbers_as_in_process(tmp_path):
    """One run through Flower's simulation engine (Ray): same history as the in-process grid."""
    common = [
        "rounds=4",
        "q=2",
        "hubs.workers=[1,2,3]",
        "rates.distribution=two_level",
        "rates.slow_fraction=0.5",
        "rates.p_slow=0.3",
        "rates.p_fast=1.0",
    ]
    assert main(["run", *common, "simulation.backend=ray", f"output_dir={tmp_path / 'ray'}"]) == 0
    assert (
        main(["run", *common, "simulation.backend=inprocess", f"output_dir={tmp_path / 'local'}"])
        == 0
    )
    ray_rows, local_rows = (
        read_csv(tmp_path / "ray/history.csv"),
        read_csv(tmp_path / "local/history.csv"),
    )
    assert len(ray_rows) == len(local_rows) == 3
    for ray_row, local_row in zip(ray_rows, local_rows, strict=False):
        for key in ray_row:
            if key != "elapsed_s":
                assert ray_row[key] == local_row[key], key  # bit-identical, not just close
    ray_models = torch.load(tmp_path / "ray/hub_models.pt")
    local_models = torch.load(tmp_path / "local/hub_models.pt")
    for ray_hub, local_hub in zip(ray_models["hubs"], local_models["hubs"], strict=True):
        for key in ray_hub:
            assert torch.equal(ray_hub[key], local_hub[key]), key


def test_reruns_are_bit_identical_cnn_included(tmp_path):
    common = [
        "simulation.backend=inprocess",
        "rounds=2",
        "q=1",
        "tau=2",
        "hubs.workers=2",
        "model.name=cnn",
        "eval.hubs=false",
        "eval.train_examples=200",
    ]
    for name in ("a", "b"):
        assert main(["run", *common, f"output_dir={tmp_path / name}"]) == 0
    for file in ("history.csv", "rounds.csv"):
        first, second = read_csv(tmp_path / "a" / file), read_csv(tmp_path / "b" / file)
        for row_a, row_b in zip(first, second, strict=True):
            for key in row_a:
                if key not in ("elapsed_s", "seconds"):
                    assert row_a[key] == row_b[key], (file, key)
    first, second = (
        torch.load(tmp_path / "a/hub_models.pt"),
        torch.load(tmp_path / "b/hub_models.pt"),
    )
    for hub_a, hub_b in zip(first["hubs"], second["hubs"], strict=True):
        assert all(torch.equal(hub_a[k], hub_b[k]) for k in hub_a)


def test_runs_in_processes_with_other_hash_seeds_are_bit_identical(tmp_path):
    """Every number of a run, hub train metrics included, is the same in any process."""
    args = [
        "run",
        "simulation.backend=inprocess",
        "rounds=2",
        "hubs.count=2",
        "hubs.workers=[3,2]",
        "rates.values=[1.0,0.5,0.7,0.9,0.3]",
        "eval.hubs=true",
    ]
    for seed in ("1", "2"):
        out = tmp_path / seed
        done = subprocess.run(
            [sys.executable, "-m", "flwr_multilevel", *args, f"output_dir={out}"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    for file, skip in (("history.csv", "elapsed_s"), ("rounds.csv", "seconds")):
        first, second = read_csv(tmp_path / "1" / file), read_csv(tmp_path / "2" / file)
        assert len(first) == len(second) == 2
        assert file == "history.csv" or "hub1_train_loss" in first[0], first[0].keys()
        for row_a, row_b in zip(first, second, strict=True):
            assert {k: v for k, v in row_a.items() if k != skip} == {
                k: v for k, v in row_b.items() if k != skip
            }, file


def test_a_run_whose_workers_all_fail_exits_1_quietly_with_every_round_kept(
    tmp_path, capsys, caplog, monkeypatch
):
    from flwr.clientapp import ClientApp

    from flwr_multilevel.clients import multilevel_mod
    from flwr_multilevel.engines import launch

    down = ClientApp(mods=[multilevel_mod])

    @down.train()
    def _train(msg, context):
        raise RuntimeError("disk full")

    monkeypatch.setattr(launch, "client_app", down)
    status = main(
        [
            "run",
            "simulation.backend=inprocess",
            "rounds=8",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("flwr-multilevel: error: hub 0 kept its model for 5 rounds")
    assert "disk full" in err[-1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 5, warnings  # one line per round for 12 failed workers at 3 hubs
    assert all("12 of 12 workers without a valid reply" in line for line in warnings)
    assert all("hubs 0, 1, 2 kept their models" in line for line in warnings)
    rows = read_csv(tmp_path / "run" / "rounds.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4, 5]  # the last round is kept too


@pytest.mark.simulation
def test_the_ray_backend_prints_no_banner_or_warning(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(  # noqa: S603 (our own CLI)
        [
            sys.executable,
            "-m",
            "flwr_multilevel.cli.main",
            "run",
            "rounds=2",
            "hubs.workers=1",
            f"output_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DEPRECATED" not in proc.stderr and "FutureWarning" not in proc.stderr
    assert "final: accuracy" in proc.stdout
