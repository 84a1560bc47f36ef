"""Run the real engine and ClientApp in-process on a prepared experiment."""

import csv

import numpy as np

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.experiment import initial_model, prepare, train_config
from flwr_multilevel.local_grid import LocalGrid
from flwr_multilevel.strategies import MLLSGD


def run_engine(cfg, strategy=None, on_round=None):
    """Return (experiment, hub models as lists of numpy arrays) after cfg.rounds rounds."""
    exp = prepare(cfg)
    engine = MLLSGD(
        exp.hierarchy,
        tau=cfg.tau,
        q=cfg.q,
        mixing=exp.mixing,
        strategy=strategy or exp.strategy,
        train_config=train_config(exp),
        wait_for_slowest=bool(cfg.wait_for_slowest),
    )
    grid = LocalGrid(client_app, exp.hierarchy.num_workers)
    models = engine.start(grid, initial_model(exp), cfg.rounds, on_round=on_round)
    return exp, [[a.numpy() for a in m.values()] for m in models]


def flat(model):
    return np.concatenate([a.ravel() for a in model])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
