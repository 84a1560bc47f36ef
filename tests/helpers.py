"""Run the real engine and ClientApp in-process on a prepared experiment."""

import csv
import os
import signal

import numpy as np
from flwr.app import ConfigRecord

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.deploy.processes import descendants, pid_alive
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.prepare import build_mllsgd, initial_model, prepare, train_config


def run_engine(cfg, strategy=None, on_round=None):
    """Return (experiment, hub models as lists of numpy arrays) after cfg.rounds rounds."""
    exp = prepare(cfg)
    if strategy is not None:
        exp.strategy = strategy
    mll = build_mllsgd(exp, on_round=on_round)
    grid = LocalGrid(client_app, exp.hierarchy.num_workers)
    mll.start(
        grid, initial_model(exp), cfg.rounds, train_config=ConfigRecord({**train_config(exp)})
    )
    models = [mll.models[d] for d in range(exp.hierarchy.num_hubs)]
    return exp, [[a.numpy() for a in m.values()] for m in models]


def flat(model):
    return np.concatenate([a.ravel() for a in model])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` of a child a test interrupts: Ctrl-C's default, as in a terminal.

    A child inherits an ignored SIGINT, and the tests may run as a background
    job (``pytest &``), where the shell starts them with SIGINT ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_left_over(pids: list[int]) -> list[int]:
    """SIGKILL those of ``pids`` (and processes below them) still running; return them.

    A test that checks that an interrupted command left no process calls it
    last, so that a failure does not leave a federation running for the rest
    of the suite.
    """
    left = sorted({p for p in [*pids, *(c for p in pids for c in descendants(p))] if pid_alive(p)})
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left
