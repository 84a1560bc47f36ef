"""`flwr run .` with a bad run config: one line in the run's log, the run ends as failed.

Starts its own simulation SuperLink on free loopback ports with its own
``FLWR_HOME`` (every process recorded and stopped by PID), submits this
repository's Flower App with ``flwr run``, and reads the run's status back
with ``flwr ls``. ``flwr run`` itself exits 0 whatever the run's end (Flower
1.42's CLI); ``flwr-multilevel config --run-config`` is the pre-flight check
that exits 2, tested beside it.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from flwr_multilevel.cli.main import main
from flwr_multilevel.deploy.flower_files import write_connections
from flwr_multilevel.deploy.flower_processes import FLOWER_ENV
from flwr_multilevel.deploy.processes import ProcessGroup, executable, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
BAD = "tau='abc'"
ONE_LINE = "flwr-multilevel: error: tau: expected an integer in run_config, got 'abc'"


def _flwr(args: list[str], home: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**FLOWER_ENV, "FLWR_HOME": str(home), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    return subprocess.run(
        [executable("flwr"), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_preflight_check_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--run-config", BAD, "--app", str(ROOT)]) == 2
    out, err = capsys.readouterr()
    assert (out, err.strip()) == ("", ONE_LINE)
    assert main(["config", "--run-config", "nokey=1", "--app", str(ROOT)]) == 2
    assert "'nokey' is not in the app's [tool.flwr.app.config]" in capsys.readouterr().err
    assert main(["config", "--run-config", "tau=8 hubs.count=5", "--app", str(ROOT)]) == 0
    out = capsys.readouterr().out
    assert "tau: 8" in out and "count: 5" in out


@pytest.mark.simulation
def test_bad_run_config_fails_the_run_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "flwr-home"
    port, control = free_port(), free_port()
    argv = [executable("flower-superlink"), "--insecure", "--simulation"]
    argv += ["--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--control-api-address", f"127.0.0.1:{control}"]
    argv += ["--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation"]
    with ProcessGroup(env={**FLOWER_ENV, "FLWR_HOME": str(home)}) as group:
        superlink = group.start("superlink", argv, log_path=tmp_path / "superlink.log")
        wait_for_port("127.0.0.1", port, superlink)
        write_connections(home, {"sim": f"127.0.0.1:{port}"}, None)
        run = _flwr(["run", ".", "sim", "--stream", "--run-config", BAD], home, timeout=240)
        streamed = run.stdout + run.stderr
        status = ""
        for _ in range(60):  # the status lands a moment after the last log line
            listed = _flwr(["ls", "sim", "--format", "json"], home, timeout=60)
            runs = json.loads(listed.stdout).get("runs", [])
            status = runs[0].get("status", "") if runs else ""
            if status.startswith("finished"):
                break
            time.sleep(1)
    assert ONE_LINE in streamed, streamed[-3000:]
    assert "Traceback" not in streamed, streamed[-3000:]
    assert "ConfigError" not in streamed, streamed[-3000:]
    assert status == "finished:failed", status
