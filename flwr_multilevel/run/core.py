"""Run an experiment on an engine, recorded by the run core.

The path of one run: the results folder is claimed and its run files written
(:func:`write_run_files`), the recorder scores round 0, the engine runs the
rounds and hands each to :meth:`RunRecorder.on_round`, and
:meth:`RunRecorder.finish` writes the summary and the plots.
"""

from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.common.logger import log
from omegaconf import OmegaConf

from flwr_multilevel.engines.engine import Engine
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.prepare import (
    Experiment,
    initial_model,
    network_record,
    torch_threads,
)
from flwr_multilevel.run.evaluate import Evaluator
from flwr_multilevel.run.recorder import Progress, RunRecorder
from flwr_multilevel.run.results import ResultsFolder
from flwr_multilevel.run.resume import check_resume, repair
from flwr_multilevel.run.state import StateError, decode


def write_run_files(folder: ResultsFolder, exp: Experiment, initial: ArrayRecord) -> None:
    """Write what a run knows before its first round.

    ``config.yaml``, ``network.json``, ``theory.json``, ``partition.json``
    and ``initial_model.pt``.
    """
    folder.write_config(exp.cfg)
    folder.write_json("network.json", network_record(exp))
    folder.write_json("theory.json", exp.theory)
    folder.write_partition(exp.partitions)
    folder.save_model("initial_model.pt", initial)


def log_network(exp: Experiment) -> None:
    """Log the network quantities of the theory at the start of a run."""
    h, s = exp.hierarchy, exp.spectrum
    log(
        INFO,
        "MLL-SGD network: %s hubs %s, graph '%s' (%s edges)",
        h.num_hubs,
        list(h.sizes),
        exp.cfg.hubs.graph,
        exp.graph.number_of_edges(),
    )
    log(
        INFO,
        "Mixing H: zeta=%.4f, lambda_2=%.4f, lambda_D=%.4f, spectral gap=%.4f",
        s.zeta,
        s.lambda_2,
        s.lambda_d,
        s.gap,
    )
    log(
        INFO,
        "Hub weights b=%s, mean rate P=%.4f, sum a_i^2 p_i=%.3g",
        np.round(h.b, 4).tolist(),
        h.mean_rate,
        h.rate_variance_term,
    )


def _resume(exp: Experiment, engine: Engine, initial: ArrayRecord) -> dict[str, Any]:
    """Check the folder, restore the engine in memory, then repair the folder; return the state.

    Raises
    ------
    ConfigError
        ``--resume``: the folder is not the run of its checkpoint, or the
        engine cannot take its state (the folder is then left as it was).
    """
    checked = check_resume(exp.output_dir, exp.cfg, initial, exp.plan)
    state = decode(checked.state)
    try:
        engine.restore(state["mll"])
    except (StateError, ValueError, TypeError, KeyError) as err:
        raise ConfigError("--resume", f"checkpoint.pt: the engine cannot take it ({err})") from None
    repair(exp.output_dir, checked)
    log(INFO, "resuming after round %s (changed: %s)", state["round"], checked.changed)
    return state


def run_experiment(
    exp: Experiment, engine: Engine, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run an experiment on ``engine``, writing its results folder as it goes.

    Parameters
    ----------
    exp : Experiment
        A prepared experiment (:func:`~flwr_multilevel.experiment.prepare.prepare`).
    engine : Engine
        Runs the rounds (:mod:`flwr_multilevel.engines.engine`).
    progress : Callable[[dict[str, float]], None] | None (default: None)
        Called after every round (:class:`~flwr_multilevel.run.recorder.RunRecorder`).
    resume : bool (default: False)
        Continue the run in ``exp.output_dir`` from its checkpoint (written at
        every evaluation): the finished run's files equal an uninterrupted
        run's, bit for bit.

    Returns
    -------
    dict[str, Any]
        The summary (also written to ``summary.json``).
    """
    torch.set_num_threads(torch_threads(exp.cfg))  # the server's evaluation, in-process workers
    folder = ResultsFolder(exp.output_dir, overwrite=bool(exp.cfg.overwrite), resume=resume)
    init = initial_model(exp)
    state = _resume(exp, engine, init) if resume else None
    if state is None:
        write_run_files(folder, exp, init)
    log_network(exp)
    recorder = RunRecorder(
        folder,
        exp.plan,
        Evaluator(exp),
        engine_state=engine.state_dict,
        progress=progress,
        config=OmegaConf.to_yaml(exp.cfg, resolve=True),
    )
    recorder.begin([init] * exp.hierarchy.num_hubs, state)
    engine.run(init, recorder.on_round)
    return recorder.finish(zeta=exp.spectrum.zeta, failed_hubs={})  # deploy's: dead hubs
