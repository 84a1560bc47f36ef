"""Deployed failures end in bounded time with their reasons: a dead worker, a dead SuperLink.

ONE deployment on loopback (insecure: failures, not security, are tested here), 2 hubs x 2
workers, 4 rounds. After round 1 worker 1's SuperNode is killed: hub 0 goes on with worker 0
(worker 1 counted missing, no "minimum required" wait). After round 2 hub 1's SuperLink is
killed: its ServerApp notices (deploy.superlink_timeout), tells hub 0 it left and exits; hub 0
skips it and finishes; deploy names the dead SuperLink.
"""

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flwr_multilevel.deploy.federation import descendants, local_federation, pid_alive
from flwr_multilevel.deploy.hub_grid import FAILED_FILE
from flwr_multilevel.deploy.runner import DeployOutcome, HubWatch, deploy_on
from flwr_multilevel.experiment.prepare import prepare
from tests.conftest import make_config
from tests.test_deploy import rows, tree

pytestmark = pytest.mark.deployment

SIZES = [2, 2]
BOUNDS = [
    "deploy.gossip_timeout=5",
    "deploy.peer_wait=300",
    "deploy.superlink_timeout=5",
    "deploy.run_timeout=900",
    "simulation.timeout=300",
]


@dataclass
class Failed:
    run: Path
    outcome: DeployOutcome
    seconds: float
    server_app: int  # hub 1's ServerApp
    exited_by_itself: bool


def _kill_tree(pid: int) -> None:
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def failed(tmp_path_factory) -> Failed:
    tmp = tmp_path_factory.mktemp("failures")
    overrides = ["hubs.count=2", "hubs.workers=2", "tau=2", "q=1", "rounds=4", *BOUNDS]
    exp = prepare(make_config(tmp / "dep", [*overrides, "eval.train_examples=200"]))
    seen: dict[str, float] = {}  # the ServerApp pid, the time it exited
    orphans: list[int] = []

    def kill(fed):
        def on_submitted(hubs: list[HubWatch]) -> None:
            def watch() -> None:
                deadline = time.monotonic() + 600
                done = lambda r: all(  # noqa: E731
                    (h.folder / "models" / f"round-{r:05d}.pt").is_file() for h in hubs
                )
                while not done(1) and time.monotonic() < deadline:
                    time.sleep(0.05)
                _kill_tree(fed.supernodes[1].proc.pid)  # worker 1 (hub 0), and its SuperExec
                while not done(2) and time.monotonic() < deadline:
                    time.sleep(0.05)
                link = fed.superlinks[1].proc
                orphans.extend(descendants(link.pid))  # its SuperExec and hub 1's ServerApp
                seen["server_app"] = int((hubs[1].folder / "pid").read_text())
                os.kill(link.pid, signal.SIGKILL)  # only the SuperLink: the rest is orphaned
                while pid_alive(int(seen["server_app"])) and time.monotonic() < deadline:
                    time.sleep(0.1)
                seen["exited_at"] = time.monotonic()

            threading.Thread(target=watch, daemon=True).start()

        return on_submitted

    start = time.monotonic()
    try:
        with local_federation(tmp / "fed", SIZES, insecure=True, superexec_poll_s=0.1) as fed:
            outcome = deploy_on(fed, exp, on_submitted=kill(fed))
            ended = time.monotonic()  # before the federation is stopped
            pids = tree(fed.group.pids)
        seconds = time.monotonic() - start
        left = [p for p in [*pids, *orphans] if pid_alive(p)]
    finally:
        for pid in orphans:  # ours, reparented when their SuperLink died: never left behind
            _kill_tree(pid)
    assert orphans and left == []  # the orphans too: the federation tracked them
    exited = float(seen.get("exited_at", float("inf"))) < ended  # by itself, not by our stop
    return Failed(tmp / "dep" / "run", outcome, seconds, int(seen["server_app"]), exited)


def test_a_dead_worker_is_counted_missing_and_its_hub_goes_on(failed):
    hub0 = rows(failed.run / "hub-0" / "rounds.csv")
    assert [int(r["round"]) for r in hub0] == [1, 2, 3, 4]
    assert [r["missing"] for r in hub0] == ["0", "1", "1", "1"]
    assert (failed.run / "hub-0" / "summary.json").is_file()


def test_a_dead_superlink_is_named_and_its_server_app_leaves(failed):
    assert list(failed.outcome.failed) == [1]
    assert "SuperLink" in failed.outcome.failed[1]
    assert failed.exited_by_itself  # the orphaned ServerApp stopped serving and exited
    reason = (failed.run / "hub-1" / FAILED_FILE).read_text()
    assert "deploy.superlink_timeout" in reason
    hub0 = rows(failed.run / "hub-0" / "rounds.csv")
    assert [r["skipped_peers"] for r in hub0] == ["", "", "0:1", "0:1"]
    # gone, not slow: hub 0 did not wait deploy.peer_wait (300 s) for it
    assert all(float(r["seconds"]) < 150 for r in hub0[2:]), [r["seconds"] for r in hub0]
    log = (failed.run / "hub-0" / "hub.log").read_text()
    assert "skipped hub 1" in log
    summary = json.loads((failed.run / "summary.json").read_text())
    assert summary["skipped_gossip"] == 2 and list(summary["failed_hubs"]) == ["1"]
    combined = rows(failed.run / "rounds.csv")
    assert [r["failed_hubs"] for r in combined][-1] == "1"
