"""The MLL-SGD ServerApp: all D hubs in one ServerApp, on one Grid."""

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flwr_multilevel.engines.engine import GridEngine
from flwr_multilevel.engines.shared_nodes import share_nodes
from flwr_multilevel.engines.simulation import poll_interval, tune_grid
from flwr_multilevel.experiment.config import checked_run_config
from flwr_multilevel.experiment.prepare import Experiment, prepare
from flwr_multilevel.run.core import run_experiment
from flwr_multilevel.run.recorder import Progress
from flwr_multilevel.strategies.one_line import report_in_one_line

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment that ``run_config`` (``[tool.flwr.app.config]``) describes.

    A bad run config or an aborted run ends the run as failed (Flower's status
    ``finished:failed``) with one ``flwr-multilevel: error: ...`` line in its log
    (:mod:`~flwr_multilevel.strategies.one_line`). A simulation with fewer
    SuperNodes than workers (Flower's local default is 2) runs several workers
    on each (:func:`~flwr_multilevel.engines.shared_nodes.share_nodes`).
    """
    report_in_one_line()
    exp = prepare(checked_run_config(context.run_config))
    workers = share_nodes(grid, exp.hierarchy.num_workers, float(exp.cfg.simulation.timeout))
    run_experiment(exp, GridEngine(exp, workers))


def make_server_app(
    exp: Experiment,
    outcome: dict[str, Any],
    progress: Progress | None = None,
    resume: bool = False,
) -> ServerApp:
    """Return a ServerApp that runs a prepared experiment.

    ``outcome["summary"]`` receives the summary, or ``outcome["error"]`` the
    exception, since the simulation engine runs the ServerApp in a thread.
    """
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        del context
        tune_grid(grid, poll_interval(exp.hierarchy.num_workers))  # Flower's: every 0.1 s
        try:
            engine = GridEngine(exp, grid)
            outcome["summary"] = run_experiment(exp, engine, progress, resume)
        except BaseException as err:  # pylint: disable=broad-except
            outcome["error"] = err
            raise

    return server
