"""The MLL-SGD ServerApp: all D hubs in one ServerApp, on one Grid."""

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from . import experiment
from .config import checked_run_config
from .simulation import tune_grid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment that ``run_config`` (``[tool.flwr.app.config]``) describes."""
    exp = experiment.prepare(checked_run_config(context.run_config))
    experiment.run(exp, grid)


def make_server_app(
    exp: experiment.Experiment,
    outcome: dict[str, Any],
    progress: experiment.Progress | None = None,
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
        tune_grid(grid)  # the in-memory grid of the simulation engine polls every 0.01 s
        try:
            outcome["summary"] = experiment.run(exp, grid, progress=progress, resume=resume)
        except BaseException as err:  # pylint: disable=broad-except
            outcome["error"] = err
            raise

    return server
