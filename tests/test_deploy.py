"""`flwr-multilevel deploy`: every hub its own SuperLink on loopback, against the simulation."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from flwr_multilevel import cli
from flwr_multilevel.deploy.federation import descendants, local_federation, pid_alive
from flwr_multilevel.deploy.runner import DeployOutcome, HubWatch, deploy_on
from flwr_multilevel.engines.launch import launch
from flwr_multilevel.experiment.prepare import prepare
from tests.conftest import make_config
from tests.helpers import sigint_as_in_a_terminal, stop_left_over

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).parent.parent
SIZES = [2, 2, 2]
BASE = ["hubs.count=3", "hubs.workers=2", "hubs.graph=path", "eval.train_examples=200"]


def tree(pids: list[int]) -> list[int]:
    return sorted({*pids, *(c for p in pids for c in descendants(p))})


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


@dataclass
class Deployed:
    sim: Path
    run: Path
    outcome: DeployOutcome
    killed_pid: int


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Deployed:
    """ONE deployed run on loopback (TLS, SuperNode auth), 3 hubs x 2 workers on a path,
    3 rounds; hub 1 (the middle) is killed by PID once every hub finished round 2.

    Rounds 1-2 are compared with the simulation engine, round 3 shows the skipped hub.
    """
    tmp = tmp_path_factory.mktemp("deploy")
    overrides = [*BASE, "tau=2", "q=1", "seed=3", "eval.hubs=true"]
    launch(prepare(make_config(tmp / "sim", [*overrides, "rounds=2"])))
    exp = prepare(make_config(tmp / "dep", [*overrides, "rounds=3"]))
    killed: dict[str, int] = {}

    def kill_hub_1(hubs: list[HubWatch]) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if all((h.folder / "models" / "round-00002.pt").is_file() for h in hubs):
                    killed["pid"] = int((hubs[1].folder / "pid").read_text())
                    os.kill(killed["pid"], signal.SIGKILL)
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    pids: list[int] = []
    with local_federation(tmp / "fed", SIZES, superexec_poll_s=0.1) as fed:
        outcome = deploy_on(fed, exp, gossip_timeout=10, on_submitted=kill_hub_1)
        pids = tree(fed.group.pids)
    assert [p for p in pids if pid_alive(p)] == []  # after a failed hub, nothing left either
    return Deployed(tmp / "sim" / "run", tmp / "dep" / "run", outcome, killed["pid"])


def test_deployed_hubs_equal_the_simulation(deployed):
    sim, run = deployed.sim, deployed.run
    want = torch.load(sim / "hub_models.pt", weights_only=True)
    assert want["round"] == 2
    for d in range(3):
        got = torch.load(run / f"hub-{d}" / "models" / "round-00002.pt", weights_only=True)
        for key, value in want["hubs"][d].items():
            np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=1e-6)
    # the hubs did mix: hub 0 no longer holds what hub 1 holds
    assert not torch.equal(want["hubs"][0]["linear.weight"], want["hubs"][1]["linear.weight"])

    sim_history = rows(sim / "history.csv")
    dep_history = rows(run / "history.csv")
    assert list(dep_history[0]) == list(sim_history[0])  # the same columns as `run`
    for a, b in zip(sim_history, dep_history[:3], strict=True):
        for key in ("round", "time_step", "time_slot", "steps_taken", "bytes_worker_hub"):
            assert a[key] == b[key], key
        for key in ("loss", "accuracy", "consensus", "hub0_accuracy", "hub2_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-5), key
    assert int(dep_history[2]["bytes_hub_hub"]) > 0
    combined = rows(run / "rounds.csv")
    assert list(combined[0]) == list(rows(sim / "rounds.csv")[0])  # the same columns as `run`
    assert [r["skipped_peers"] for r in combined[:2]] == ["", ""]
    for d in range(3):
        hub = run / f"hub-{d}"
        assert (hub / "hub.log").read_text().count("[ROUND") >= 2
        assert "Successfully started run" in (hub / "run.log").read_text()


def test_a_killed_hub_is_skipped_and_named(deployed):
    """Hub 1 died in round 3; hubs 0 and 2 finish without it, and the deploy names it."""
    run, outcome = deployed.run, deployed.outcome
    assert list(outcome.failed) == [1]
    assert str(deployed.killed_pid) in outcome.failed[1]
    for d in (0, 2):
        hub_rows = rows(run / f"hub-{d}" / "rounds.csv")
        assert [int(r["round"]) for r in hub_rows] == [1, 2, 3]
        assert [r["skipped_peers"] for r in hub_rows] == ["", "", f"{d}:1"]
        assert (run / f"hub-{d}" / "summary.json").is_file()
        assert (run / f"hub-{d}" / "models" / "round-00003.pt").is_file()
    assert not (run / "hub-1" / "summary.json").exists()
    combined = rows(run / "rounds.csv")
    assert [(r["round"], r["failed_hubs"]) for r in combined] == [("1", ""), ("2", ""), ("3", "1")]
    assert combined[2]["skipped_peers"] == "0:1 2:1"
    history = rows(run / "history.csv")
    assert [int(r["round"]) for r in history] == [0, 1, 2, 3]
    assert all(np.isfinite(float(r["accuracy"])) for r in history)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["round"] == 3 and list(summary["failed_hubs"]) == ["1"]
    final = torch.load(run / "hub_models.pt", weights_only=True)
    assert final["round"] == 3 and len(final["hubs"]) == 3
    # u at round 3 uses hub 1's last model (round 2)
    stale = torch.load(run / "hub-1" / "models" / "round-00002.pt", weights_only=True)
    assert torch.equal(final["hubs"][1]["linear.weight"], stale["linear.weight"])


def test_cli_exits_non_zero_naming_the_failed_hub(monkeypatch, tmp_path, capsys):
    import flwr_multilevel.deploy.runner as deploy_module

    def fake(exp, **kwargs):
        return DeployOutcome({}, {2: "its ServerApp (pid 7) died"})

    monkeypatch.setattr(deploy_module, "deploy", fake)
    status = cli.main(["deploy", f"output_dir={tmp_path}", "eval.train_examples=10"])
    assert status == 1
    assert "hub 2 failed: its ServerApp (pid 7) died" in capsys.readouterr().err


def test_cli_deploy_sigint_leaves_no_process(tmp_path):
    """Ctrl-C while the hubs run: every process deploy started, and below them, is gone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "flwr_multilevel", "deploy", "--insecure"]
    argv += ["hubs.count=2", "hubs.workers=1", "rounds=50", f"output_dir={tmp_path}"]
    log_path = tmp_path / "deploy.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=sigint_as_in_a_terminal,
        )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while (
            not (tmp_path / "hub-1" / "pid").is_file() or not (tmp_path / "hub-0" / "pid").is_file()
        ):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        started = [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", log_path.read_text())]
        server_apps = [int((tmp_path / f"hub-{d}" / "pid").read_text()) for d in (0, 1)]
        pids = tree(started + server_apps)
        assert len(started) >= 6 and all(pid_alive(p) for p in server_apps)
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        left = stop_left_over(pids)
    assert left == []
    assert not (tmp_path / "federation" / "certs").exists()


SUMMARY_TIMES = re.compile(r"wall time [0-9.]+ s \(evaluation [0-9.]+ s\)|results: \S+")


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    cli_path = Path(sys.executable).parent / "flwr-multilevel"
    return subprocess.run(
        [str(cli_path), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_cli_deploy_records_a_run_like_run(tmp_path):
    """`flwr-multilevel deploy rounds=2` as typed: exit 0, `run`'s summary, files and columns."""
    small = ["rounds=2", "hubs.workers=2", "eval.train_examples=200"]
    sim = _cli(
        ["run", *small, "simulation.backend=inprocess", f"output_dir={tmp_path / 'sim'}"], 600
    )
    assert sim.returncode == 0, sim.stderr[-3000:]
    dep = _cli(["deploy", *small, f"output_dir={tmp_path / 'dep'}"], 900)
    assert dep.returncode == 0, dep.stdout[-3000:] + dep.stderr[-3000:]
    summary = [line for line in dep.stdout.splitlines() if not line.startswith("round ")]
    assert SUMMARY_TIMES.sub("", "\n".join(summary)) == SUMMARY_TIMES.sub("", sim.stdout.strip())
    assert "Traceback" not in dep.stderr

    def files(folder: Path) -> set[str]:
        skip = ("hub-", "federation")
        return {p.name for p in folder.iterdir() if not p.name.startswith(skip)}

    # deploy adds its per-hub folders; a deployed run cannot be resumed, so it has no checkpoint
    assert files(tmp_path / "dep") == files(tmp_path / "sim") - {"checkpoint.pt"}
    assert "accuracy_vs_time_step.png" in files(tmp_path / "dep")
    for name in ("history.csv", "rounds.csv"):
        assert list(rows(tmp_path / "dep" / name)[0]) == list(rows(tmp_path / "sim" / name)[0])
    dep_summary = json.loads((tmp_path / "dep" / "summary.json").read_text())
    sim_summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert set(dep_summary) == set(sim_summary)
    assert dep_summary["failed_hubs"] == {} and dep_summary["skipped_gossip"] == 0
    assert dep_summary["steps_per_worker"] == sim_summary["steps_per_worker"]
