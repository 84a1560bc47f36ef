"""The MLL-SGD ServerApp: all D hubs in one ServerApp, on one Grid."""

import logging
from logging import ERROR
from typing import Any

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from flwr_multilevel.engines.engine import GridEngine
from flwr_multilevel.engines.simulation import poll_interval, tune_grid
from flwr_multilevel.errors import ConfigError, RunAborted
from flwr_multilevel.experiment.config import checked_run_config
from flwr_multilevel.experiment.prepare import Experiment, prepare
from flwr_multilevel.run.core import run_experiment
from flwr_multilevel.run.recorder import Progress

ONE_LINE_ERRORS = (ConfigError, RunAborted)  # reported in one line, never as a traceback


class OneLineErrors(logging.Filter):
    """Drop the traceback Flower logs for an error this app has already reported in one line.

    Under ``flwr run``, Flower's runtime catches what a ServerApp raises and
    logs it with its traceback (``"... raised an exception"``), then ends the
    run as failed. For a bad run config or an aborted run the one line the
    ServerApp logged first says everything, so that record is dropped; any
    other exception keeps its traceback.

    Examples
    --------
    >>> record = logging.LogRecord("flwr", ERROR, "", 0, "x raised", None, None)
    >>> record.exc_info = (ConfigError, ConfigError("tau", "expected an integer"), None)
    >>> OneLineErrors().filter(record)
    False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a record whose exception is one of ``ONE_LINE_ERRORS``."""
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, ONE_LINE_ERRORS)


def report_in_one_line(logger: logging.Logger | None = None) -> None:
    """Install :class:`OneLineErrors` on Flower's logger (once)."""
    logger = logger or logging.getLogger("flwr")
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment that ``run_config`` (``[tool.flwr.app.config]``) describes.

    A bad run config or an aborted run ends the run as failed (Flower's status
    ``finished:failed``) with one ``flwr-multilevel: error: ...`` line in its log.
    """
    report_in_one_line()
    exp = prepare(checked_run_config(context.run_config))
    try:
        run_experiment(exp, GridEngine(exp, grid))
    except RunAborted as err:
        log(ERROR, "flwr-multilevel: error: %s", err)
        raise


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
