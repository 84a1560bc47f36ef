"""Flower SuperLinks and SuperNodes on loopback: auth, flwr run, and no process left behind."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flwr_multilevel.certs import make_supernode_keys, write_private
from flwr_multilevel.deploy_processes import (
    DeploymentError,
    descendants,
    local_federation,
    pid_alive,
    start_supernode,
    wait_for_log,
)

pytestmark = pytest.mark.deployment

APP = Path(__file__).parent / "deploy_app"
ROOT = Path(__file__).parent.parent


def tree(pids: list[int]) -> list[int]:
    """The recorded PIDs and every process below them (SuperExecs, ServerApps)."""
    return sorted({*pids, *(c for p in pids for c in descendants(p))})


def test_auth_registered_supernode_connects_unregistered_is_refused_and_flwr_run(tmp_path):
    with local_federation(tmp_path / "fed", [2]) as fed:
        # both registered SuperNodes came up (local_federation waits for their SuperNode ID)
        logs = [tmp_path / "fed" / f"supernode-{i}" / "supernode.log" for i in (0, 1)]
        assert all("SuperNode ID" in p.read_text() for p in logs)
        superlink_cmd = fed.superlinks[0].proc.args
        assert "--enable-supernode-auth" in superlink_cmd and "--insecure" not in superlink_cmd

        private, _ = make_supernode_keys()
        key = write_private(tmp_path / "stranger", private)
        stranger = start_supernode(
            fed.group,
            fed.folder,
            fed.superlinks[0],
            9,
            {"partition-id": 9},
            root_certificates=fed.files.ca_cert,
            private_key=key,
            wait=False,
        )
        run = fed.submit(0, APP, {"min-nodes": 2, "tag": "hub0"})
        stranger_log = tmp_path / "fed" / "supernode-9" / "supernode.log"
        with pytest.raises(DeploymentError, match="exited with"):
            wait_for_log(stranger_log, "SuperNode ID", stranger.proc)
        assert "Failed to activate SuperNode" in stranger_log.read_text()

        assert run.wait(120) == 0
        text = (tmp_path / "fed" / "run-0.log").read_text()
        echoes = [line for line in text.splitlines() if line.startswith("ECHO tag=hub0")]
        assert sorted(e.split("'worker-id': '")[1][0] for e in echoes) == ["0", "1"]
        pids = tree(fed.group.pids)
    assert [p for p in pids if pid_alive(p)] == []


def test_no_process_left_after_an_exception(tmp_path):
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with local_federation(tmp_path, [1], insecure=True) as fed:
            pids = tree(fed.group.pids)
            assert len(pids) >= 4  # SuperLink, SuperNode and their SuperExecs
            raise RuntimeError("boom")
    assert [p for p in pids if pid_alive(p)] == []


SCRIPT = """
import json, sys, time
from flwr_multilevel.deploy_processes import descendants, local_federation
with local_federation(sys.argv[1], [1], insecure=True) as fed:
    pids = [*fed.group.pids, *(c for p in fed.group.pids for c in descendants(p))]
    print(json.dumps(pids), flush=True)
    time.sleep(120)
"""


def test_no_process_left_after_sigint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    manager = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert manager.stdout is not None
        pids = json.loads(manager.stdout.readline())
        assert len(pids) >= 4 and all(pid_alive(p) for p in pids[:2])
        os.kill(manager.pid, signal.SIGINT)
        assert manager.wait(60) != 0
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()
    assert [p for p in pids if pid_alive(p)] == []
