"""kill -9, then `run --resume`: the finished run equals an uninterrupted one, bit for bit."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from flwr_multilevel.cli.main import main

TIMING = {"elapsed_s", "seconds"}


def rows(path):
    with open(path, newline="") as file:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(file)]


def history_rounds(folder):
    path = folder / "history.csv"
    return len(rows(path)) if path.exists() else 0


@pytest.mark.parametrize("strategy", ["FedAvg", "FedAdam"])
def test_kill_9_then_resume_is_bit_identical(tmp_path, strategy):
    common = [
        "simulation.backend=inprocess",
        "rounds=16",
        "q=2",
        "tau=2",
        f"strategy.name={strategy}",
        *(["strategy.options.eta=0.05"] if strategy == "FedAdam" else []),
    ]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "flwr_multilevel", "run", *common, f"output_dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while history_rounds(killed) < 3 and proc.poll() is None:  # a few evaluations in
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (killed / "summary.json").exists()  # really killed mid-run
    torch.load(
        killed / "checkpoint.pt", weights_only=True
    )  # never half-written, never pickled objects

    assert main(["run", "--resume", str(killed)]) == 0
    assert not list(killed.glob(".*.tmp"))  # what a kill left half-written is cleared
    assert main(["run", *common, f"output_dir={whole}"]) == 0
    for name in ("history.csv", "rounds.csv"):
        assert rows(killed / name) == rows(whole / name), name
    first, second = torch.load(killed / "hub_models.pt"), torch.load(whole / "hub_models.pt")
    assert first["round"] == second["round"] == 16
    for hub_a, hub_b in zip(first["hubs"], second["hubs"], strict=True):
        assert all(torch.equal(hub_a[k], hub_b[k]) for k in hub_a)


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "holds no checkpointed run" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "rounds=3"]) == 2
