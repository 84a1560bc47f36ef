"""Every wait of `deploy` is bounded, and its outcome says what happened (no process started)."""

import subprocess
import sys
from pathlib import Path

import pytest

import flwr_multilevel.deploy.flower_processes as flower_processes
from flwr_multilevel import cli
from flwr_multilevel.deploy.federation import DeploymentError
from flwr_multilevel.deploy.hub_grid import FAILED_FILE
from flwr_multilevel.deploy.runner import DeployOutcome, HubWatch, run_bound
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import load_config, validate
from flwr_multilevel.experiment.prepare import prepare
from tests.conftest import make_config


def _sleeper() -> "subprocess.Popen[bytes]":
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _ended(code: int) -> "subprocess.Popen[bytes]":
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    return proc


def test_a_dead_superlink_is_named_as_such(tmp_path):
    run = _ended(1)  # flwr run lost its SuperLink and exited
    link = _ended(9)
    watch = HubWatch(0, tmp_path, run, superlink=link)
    watch.poll()
    assert watch.failed == f"its SuperLink (pid {link.pid}) died (exit code {link.returncode})"


def test_the_reason_a_hub_wrote_comes_first(tmp_path):
    run = _sleeper()
    try:
        (tmp_path / FAILED_FILE).write_text("WorkerDiscoveryError: expected 2 nodes, found 1\n")
        watch = HubWatch(1, tmp_path, run, superlink=_ended(0))
        watch.poll()
        assert watch.failed == "WorkerDiscoveryError: expected 2 nodes, found 1"
    finally:
        run.kill()
        run.wait()


def test_a_running_hub_is_left_alone_and_can_be_stopped_with_a_reason(tmp_path):
    run, link = _sleeper(), _sleeper()
    try:
        watch = HubWatch(2, tmp_path, run, superlink=link)
        watch.poll()
        assert watch.running
        watch.stop("still running after 5 s (deploy.run_timeout)")
        assert watch.failed == "still running after 5 s (deploy.run_timeout)"
    finally:
        for proc in (run, link):
            proc.kill()
            proc.wait()


def test_the_run_bound_is_the_config_s_or_what_the_other_bounds_allow(tmp_path):
    exp = prepare(make_config(tmp_path / "a", ["rounds=4", "q=2", "simulation.timeout=60"]))
    assert run_bound(exp) == 300 + 4 * 60 + 2 * 600
    exp = prepare(make_config(tmp_path / "b", ["deploy.run_timeout=90"]))
    assert run_bound(exp) == 90


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("deploy.gossip_timeout=0", "deploy.gossip_timeout"),
        ("deploy.peer_wait=10", "deploy.peer_wait"),  # shorter than gossip_timeout
        ("deploy.run_timeout=-1", "deploy.run_timeout"),
        ("deploy.superlink_timeout=nan", "deploy.superlink_timeout"),
    ],
)
def test_bad_bounds_are_named(override, key):
    with pytest.raises(ConfigError, match=key):
        validate(load_config(None, [override]))


def test_a_registration_that_takes_too_long_is_a_one_line_deployment_error(monkeypatch):
    def slow(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(flower_processes.subprocess, "run", slow)
    with pytest.raises(DeploymentError, match=r"took more than 7 s \(deploy.start_timeout\)"):
        flower_processes.register_supernode(Path("home"), "hub-0", Path("k.pub"), timeout=7)


@pytest.mark.parametrize(
    ("outcome", "status", "line"),
    [
        (DeployOutcome({"skipped_gossip": 0}), 0, None),
        (
            DeployOutcome({"skipped_gossip": 2}),
            3,
            "flwr-multilevel: warning: the gossip differed from MLL-SGD's: 2 neighbour models",
        ),
        (
            DeployOutcome({"skipped_gossip": 1}, strict="hub 1 skipped neighbours [2] in round 3"),
            1,
            "flwr-multilevel: error: deploy.strict: hub 1 skipped neighbours [2] in round 3",
        ),
        (
            DeployOutcome({"skipped_gossip": 1}, {2: "its SuperLink (pid 7) died (exit code 9)"}),
            1,
            "flwr-multilevel: error: hub 2 failed: its SuperLink (pid 7) died (exit code 9)",
        ),
    ],
)
def test_the_exit_status_says_whether_the_run_was_mll_sgd(
    monkeypatch, tmp_path, capsys, outcome, status, line
):
    import flwr_multilevel.deploy.runner as runner

    seen = {}

    def fake(exp, **kwargs):
        seen["cfg"] = exp.cfg
        return outcome

    monkeypatch.setattr(runner, "deploy", fake)
    args = ["deploy", f"output_dir={tmp_path}", "eval.train_examples=10", "--gossip-timeout", "12"]
    assert cli.main(args) == status
    err = capsys.readouterr().err
    assert (line is None and err == "") or (line is not None and line in err)
    assert seen["cfg"].deploy.gossip_timeout == 12.0  # the flag is the config key


def _hubs(tmp_path, count: int) -> list[HubWatch]:
    hubs = [HubWatch(d, tmp_path / f"hub-{d}", _sleeper()) for d in range(count)]
    for hub in hubs:
        hub.folder.mkdir()
    return hubs


def _stop(hubs: list[HubWatch]) -> None:
    for hub in hubs:
        hub.proc.kill()
        hub.proc.wait()


def test_deploy_strict_stops_every_hub_at_the_first_skip(tmp_path):
    from types import SimpleNamespace

    from flwr_multilevel.deploy.runner import _wait, first_skip
    from flwr_multilevel.run.reports import append_report
    from flwr_multilevel.strategies.report import RoundReport

    hubs = _hubs(tmp_path, 2)
    try:
        append_report(hubs[1].folder, RoundReport(1, gossip=True))
        assert first_skip(hubs) == ""
        append_report(hubs[1].folder, RoundReport(2, gossip=True, skipped_peers={1: [0]}))
        combiner = SimpleNamespace(step=lambda: None)
        skip = _wait(hubs, combiner, 60.0, True, lambda: None)  # type: ignore[arg-type]
    finally:
        _stop(hubs)
    assert skip == "hub 1 skipped neighbours [0] in round 2"
    assert [h.failed for h in hubs] == [f"deploy.strict: {skip}"] * 2


def test_the_run_bound_stops_the_hubs_still_running(tmp_path):
    from types import SimpleNamespace

    from flwr_multilevel.deploy.runner import _wait

    hubs = _hubs(tmp_path, 2)
    try:
        (hubs[0].folder / "summary.json").write_text("{}")  # hub 0 finished
        combiner = SimpleNamespace(step=lambda: None)
        assert _wait(hubs, combiner, 0.5, False, lambda: None) == ""  # type: ignore[arg-type]
    finally:
        _stop(hubs)
    assert hubs[0].done and hubs[1].failed == "still running after 0.5 s (deploy.run_timeout)"
