"""Timeouts on every backend: a round's deadline holds, and timed-out work does not pile up."""

import os
import time

import pytest
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from flwr_multilevel.client_app import load_task
from flwr_multilevel.clients import make_worker_train, multilevel_mod
from flwr_multilevel.experiment import prepare
from flwr_multilevel.server_app import make_server_app
from flwr_multilevel.simulation import run_in_simulation

from .conftest import make_config
from .helpers import read_csv

SLOW_WORKER = 0  # its every train message sleeps SLOW_S before training
SLOW_S = 5.0
RAY_TIMEOUT = 2.0


def _slow_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """Worker SLOW_WORKER sleeps SLOW_S seconds in every training round."""
    config = msg.content.get("config")
    if (
        isinstance(config, ConfigRecord)
        and "server-round" in config
        and int(config.get("worker-id", -1)) == SLOW_WORKER  # type: ignore[arg-type]
    ):
        time.sleep(SLOW_S)
    return call_next(msg, context)


slow_app = ClientApp(mods=[multilevel_mod, _slow_mod])
slow_app.train()(make_worker_train(load_task))  # the real worker


@pytest.mark.simulation
def test_ray_a_slow_worker_does_not_starve_the_others(tmp_path):
    """1 of 6 workers takes 2.5x the timeout every round, on 2 Ray actors.

    Timed-out work must not pile up: from round 2 on, the 5 other workers'
    replies all arrive every round (before the fix, work the engine had queued
    ran late and pushed later rounds' replies past their deadline).
    """
    cfg = make_config(
        tmp_path,
        [
            "simulation.backend=ray",
            "hubs.count=2",
            "hubs.workers=3",
            "rounds=4",
            f"simulation.timeout={RAY_TIMEOUT}",
        ],
    )
    exp = prepare(cfg)
    outcome: dict = {}
    cpus = os.cpu_count() or 1
    run_in_simulation(make_server_app(exp, outcome), slow_app, 6, cpus / 2)  # 2 actors
    assert "summary" in outcome, outcome.get("error")
    rounds = read_csv(tmp_path / "run" / "rounds.csv")
    arrived = [6 - int(r["missing"]) for r in rounds]
    print("replies per round:", arrived)
    assert len(rounds) == 4
    assert all(n == 5 for n in arrived[1:]), arrived
    for row in rounds[1:]:
        assert "worker 0" in row["dropped_reasons"] and "timed out" in row["dropped_reasons"]
