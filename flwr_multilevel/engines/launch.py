"""Run a prepared experiment on the backend its config names."""

from typing import Any

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.engines.engine import BatchedEngine, GridEngine
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.engines.simulation import run_in_simulation
from flwr_multilevel.errors import SimulationError
from flwr_multilevel.experiment.prepare import Experiment
from flwr_multilevel.run.core import run_experiment
from flwr_multilevel.run.recorder import Progress
from flwr_multilevel.server_app import make_server_app


def launch(
    exp: Experiment, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run ``exp`` with ``simulation.backend`` and return its summary.

    ``ray`` runs the ServerApp and one virtual ClientApp node per worker in
    Flower's simulation engine (a private Ray instance, or the cluster at
    ``simulation.ray_address``); ``inprocess`` runs the same ClientApp on a
    :class:`~flwr_multilevel.engines.local_grid.LocalGrid` in this process;
    ``batched`` advances every worker in one vectorised computation
    (:mod:`flwr_multilevel.engines.batched`), same draws and numbers to float32 rounding.

    Raises
    ------
    SimulationError
        The simulation engine stopped without the ServerApp finishing.
    """
    num_workers = exp.hierarchy.num_workers
    if exp.cfg.simulation.backend == "batched":
        return run_experiment(exp, BatchedEngine(exp), progress, resume)
    if exp.cfg.simulation.backend == "inprocess":
        grid = LocalGrid(client_app, num_workers)
        return run_experiment(exp, GridEngine(exp, grid), progress, resume)
    outcome: dict[str, Any] = {}
    run_in_simulation(
        make_server_app(exp, outcome, progress, resume),
        client_app,
        num_workers,
        float(exp.cfg.simulation.cpus_per_worker),
        float(exp.cfg.simulation.gpus_per_worker),
        groups=bool(exp.cfg.simulation.ray_groups),
        address=str(exp.cfg.simulation.ray_address),
    )
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise SimulationError("the simulation ended without a result (see the log above)")
    return outcome["summary"]  # type: ignore[no-any-return]
