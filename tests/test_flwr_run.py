"""`flwr run .` as a user types it: it finishes on Flower's defaults, and a mistake is one line.

``flwr run . --stream`` runs as typed in a copy of the repository with a fresh
``FLWR_HOME``: Flower starts its own local SuperLink (on free ports, through
Flower's environment variables), which the test stops by PID. The other tests
start their own simulation SuperLink on free loopback ports with their own
``FLWR_HOME`` (every process recorded and stopped by PID), submit a Flower App
with ``flwr run``, and read the run's status back with ``flwr ls``. ``flwr
run`` itself exits 0 whatever the run's end (Flower 1.42's CLI);
``flwr-multilevel config --run-config`` is the pre-flight check that exits 2,
tested beside it. This repository's app runs on Flower's default federation of
2 SuperNodes (several workers on each); a user's app with too few SuperNodes,
a bad multi-level key or without ``multilevel_mod`` fails in one line.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from flwr_multilevel.cli.main import main
from flwr_multilevel.deploy.flower_files import write_connections
from flwr_multilevel.deploy.flower_processes import FLOWER_ENV
from flwr_multilevel.deploy.processes import ProcessGroup, executable, free_port, wait_for_port
from tests.helpers import stop_left_over

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart_multilevel"
BAD = "tau='abc'"
ONE_LINE = "flwr-multilevel: error: tau: expected an integer in run_config, got 'abc'"


def _flwr(
    args: list[str],
    home: Path,
    timeout: float,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **FLOWER_ENV,
        "FLWR_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [executable("flwr"), *args],
        cwd=cwd,
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


def test_preflight_check_of_a_users_app_reads_its_multilevel_keys_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = str(QUICKSTART)
    assert main(["config", "--run-config", "tau=16 num-server-rounds=5", "--app", app]) == 0
    out = capsys.readouterr().out
    assert "tau: 16" in out and "- num-server-rounds" in out  # the app's own key: left to it
    assert main(["config", "--run-config", "tau=0", "--app", app]) == 2
    out, err = capsys.readouterr()
    assert (out, err.strip()) == (
        "",
        "flwr-multilevel: error: tau: expected an integer >= 1, got 0",
    )


def test_the_default_experiment_on_2_nodes_is_the_one_on_12() -> None:
    from flwr_multilevel.client_app import app as client_app
    from flwr_multilevel.engines.engine import GridEngine
    from flwr_multilevel.engines.local_grid import LocalGrid
    from flwr_multilevel.engines.shared_nodes import SharedNodes, share_nodes
    from flwr_multilevel.experiment.config import load_config, validate
    from flwr_multilevel.experiment.prepare import initial_model, prepare

    models = {}
    for nodes in (12, 2):
        exp = prepare(validate(load_config(None, ["rounds=2", "simulation.backend=inprocess"])))
        grid = share_nodes(LocalGrid(client_app, nodes), exp.hierarchy.num_workers, 10.0)
        assert isinstance(grid, SharedNodes) == (nodes == 2)
        engine = GridEngine(exp, grid)
        engine.run(initial_model(exp), lambda report, hubs: None)
        models[nodes] = [a.numpy() for a in engine.strategy.global_model().values()]
    assert all((a == b).all() for a, b in zip(models[12], models[2], strict=True))


def _superlink(group: ProcessGroup, tmp_path: Path, home: Path) -> None:
    """Start a simulation SuperLink on free ports (connection ``sim`` in ``home``)."""
    port, control = free_port(), free_port()
    argv = [executable("flower-superlink"), "--insecure", "--simulation"]
    argv += ["--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--control-api-address", f"127.0.0.1:{control}"]
    argv += ["--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation"]
    superlink = group.start("superlink", argv, log_path=tmp_path / "superlink.log", cwd=tmp_path)
    wait_for_port("127.0.0.1", port, superlink)
    write_connections(home, {"sim": f"127.0.0.1:{port}"}, None)


def _status(home: Path, run_id: int | None = None, **where: Any) -> str:
    """Return the status of run ``run_id`` (the newest) once it is finished, or the last seen.

    ``where``: ``cwd`` and ``env`` of ``flwr ls`` on Flower's default connection;
    without them, the connection ``sim`` (:func:`_superlink`).
    """
    status = ""
    for _ in range(90):  # the status lands a moment after the last log line
        connection = [] if where else ["sim"]
        listed = _flwr(["ls", *connection, "--format", "json"], home, timeout=60, **where)
        runs = json.loads(listed.stdout).get("runs", [])
        runs = [r for r in runs if run_id is None or int(r.get("run-id", -1)) == run_id]
        status = runs[0].get("status", "") if runs else ""
        if status.startswith("finished"):
            break
        time.sleep(1)
    return status


def _fresh_clone(folder: Path) -> Path:
    """Return a copy of the repository's Flower App (what a clone holds), without caches."""
    clone = folder / "clone"
    clone.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "runs")
    shutil.copytree(ROOT / "flwr_multilevel", clone / "flwr_multilevel", ignore=skip)
    return clone


def _stop_local_superlink(home: Path) -> list[int]:
    """Stop the SuperLink ``flwr run`` started detached for ``home``, by PID; return its PIDs."""
    mine = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        started_here = f"FLWR_HOME={home}".encode() in env
        if started_here and any(a.endswith(b"flower-superlink") for a in argv[:2]):
            mine.append(int(entry.name))
    stop_left_over(mine)
    return mine


@pytest.mark.simulation
def test_flwr_run_dot_in_a_fresh_clone_finishes_with_no_option(tmp_path: Path) -> None:
    """`flwr run . --stream` as typed, Flower's own local SuperLink and default federation.

    ``FLWR_HOME`` is fresh, so Flower makes its default config and starts its
    local SuperLink, detached (stopped here by PID); its ports come from
    Flower's environment variables, free ones. The run writes ``runs/`` in the
    clone, the SuperLink's working directory.
    """
    clone, home = _fresh_clone(tmp_path), tmp_path / "flwr-home"
    env = {  # the environment's bin first on PATH, as an activated one has it
        "PATH": f"{Path(executable('flwr')).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
    }
    try:
        run = _flwr(["run", ".", "--stream"], home, timeout=900, cwd=clone, env=env)
        streamed = run.stdout + run.stderr
        assert "Starting local SuperLink" in streamed and "Error" not in streamed, streamed
        status = _status(home, cwd=clone, env=env)
    finally:
        superlinks = _stop_local_superlink(home)
    assert len(superlinks) == 1, superlinks  # Flower started it, we stopped it
    assert run.returncode == 0, streamed[-3000:]
    assert "(2 simulated SuperNodes)" in streamed, streamed[-3000:]  # Flower's default
    assert "12 workers on 2 SuperNodes" in streamed, streamed[-3000:]
    assert "Traceback" not in streamed, streamed[-3000:]
    assert status == "finished:completed", (status, streamed[-3000:])
    assert len(list(clone.glob("runs/*/summary.json"))) == 1


@pytest.mark.simulation
def test_bad_run_config_fails_the_run_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "flwr-home"
    with ProcessGroup(env={**FLOWER_ENV, "FLWR_HOME": str(home)}) as group:
        _superlink(group, tmp_path, home)
        run = _flwr(["run", ".", "sim", "--stream", "--run-config", BAD], home, timeout=240)
        streamed = run.stdout + run.stderr
        status = _status(home)
    assert ONE_LINE in streamed, streamed[-3000:]
    assert "Traceback" not in streamed, streamed[-3000:]
    assert "ConfigError" not in streamed, streamed[-3000:]
    assert status == "finished:failed", status


def _streamed(args: list[str], home: Path, cwd: Path, timeout: float) -> list[tuple[float, str]]:
    """Run ``flwr run ...`` streaming its log; return every line with its arrival time."""
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home), "NO_COLOR": "1"}
    began = time.monotonic()
    with subprocess.Popen(
        [executable("flwr"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = [(time.monotonic() - began, line.rstrip("\n")) for line in process.stdout]
        process.wait(timeout=timeout)
    return lines


def _no_mod_copy(folder: Path) -> Path:
    """Return a copy of the converted quickstart whose ClientApp forgot multilevel_mod."""
    app = folder / "no_mod"
    shutil.copytree(QUICKSTART, app, ignore=shutil.ignore_patterns("__pycache__"))
    client = app / "pytorchexample" / "client_app.py"
    text = client.read_text().replace("ClientApp(mods=[multilevel_mod])", "ClientApp()")
    client.write_text(text)
    return app


@pytest.mark.simulation
def test_a_users_mistakes_fail_the_run_in_one_line_before_training(tmp_path: Path) -> None:
    """The converted quickstart under `flwr run`: each mistake of the issue, one line, no round.

    Too few SuperNodes, a bad value, a wrong-length rates list, a bad hubs list,
    and a ClientApp without multilevel_mod: each ends the run before the
    workers are asked anything. The seconds from "started run" to the line are
    printed (``pytest -s``); tests do not assert on wall time.
    """
    home = tmp_path / "flwr-home"
    config = "--run-config"
    cases = [  # (app, flwr run options, the one line)
        (QUICKSTART, [], 'the simulation has 2 SuperNodes: flwr run . --federation-config "num'),
        (QUICKSTART, [config, "tau=0"], "tau: expected an integer >= 1, got 0"),
        (
            QUICKSTART,
            [config, "rates.values='1.0,0.5'"],
            "rates.values: expected 4 rates (one per worker) or one for all, got 2",
        ),
        (
            QUICKSTART,
            [config, "hubs.workers='2;2'"],
            "hubs.workers: expected comma-separated integers, got '2;2'",
        ),
        (
            _no_mod_copy(tmp_path),
            ["--federation-config", "num-supernodes=4"],
            "the ClientApp pytorchexample.client_app:app does not use multilevel_mod",
        ),
    ]
    with ProcessGroup(env={**FLOWER_ENV, "FLWR_HOME": str(home)}) as group:
        _superlink(group, tmp_path, home)
        for app, options, line in cases:
            lines = _streamed(["run", ".", "sim", "--stream", *options], home, app, timeout=600)
            text = "\n".join(text for _, text in lines)
            errors = [(t, text) for t, text in lines if "flwr-multilevel: error: " in text]
            assert len(errors) == 1 and line in errors[0][1], text[-3000:]
            assert "Traceback" not in text and "[ROUND" not in text, text[-3000:]
            run_id = int(re.search(r"Successfully started run (\d+)", text)[1])  # type: ignore[index]
            assert _status(home, run_id) == "finished:failed"
            began = next(t for t, text in lines if "Successfully started run" in text)
            seconds = f"{errors[0][0] - began:.1f} s after the run started"
            print(f"{app.name} {options}: one line {seconds} ({errors[0][0]:.1f} s after flwr run)")
