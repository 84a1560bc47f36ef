"""A mistake in a Flower app's multi-level setup ends its run with one line, not a traceback.

Under ``flwr run``, Flower's runtime catches what a ServerApp raises and logs
it with its traceback (``"Simulation raised an exception"``), after the
simulation engine has started Ray and shut it down again. For a bad run
config, too few nodes, a ClientApp without :func:`~flwr_multilevel.clients.multilevel_mod`
or an aborted run, :func:`fail_in_one_line` logs ``flwr-multilevel: error: <reason>``
at once, where the run stands, and :class:`OneLineErrors` keeps Flower's
traceback of the same error out of the log (an error that reached Flower
without that line gets it there, in place of the traceback).

A ClientApp that fails on the discovery (no ``multilevel_mod``, a node config
without its worker's index) makes Flower's simulation engine log a traceback
per node; :func:`client_failures` keeps those out of the log during the
discovery and puts the ClientApp's own exception in the one line instead.

The command line (``flwr-multilevel run``) prints these errors itself:
:class:`CallerReports` keeps the line out of its console.
"""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from logging import ERROR

from flwr.common.logger import log

from flwr_multilevel.errors import ConfigError, RunAborted, WorkerDiscoveryError

ONE_LINE_ERRORS = (ConfigError, RunAborted, WorkerDiscoveryError)
PREFIX = "flwr-multilevel: error: "
LOGGED = "flwr_multilevel_logged"  # set on an error (and its record) once its line is logged
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CLIENT_FAILURE = ("ClientAppException", "processing a message by RayBackend")  # Flower's words
EXCEPTION_LINE = re.compile(r"^\s*([\w.]*(?:Error|Exception)): (.+)$", re.M)
WRAPPERS = ("ClientAppException", "RayTaskError")


class OneLineErrors(logging.Filter):
    """Turn Flower's traceback of a one-line error into that line, or drop it if already logged.

    Examples
    --------
    >>> record = logging.LogRecord("flwr", ERROR, "", 0, "x raised", None, None)
    >>> record.exc_info = (ConfigError, ConfigError("tau", "expected an integer"), None)
    >>> OneLineErrors().filter(record), record.getMessage(), record.exc_info
    (True, 'flwr-multilevel: error: tau: expected an integer', None)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a record of an error already logged; make others one line."""
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, ONE_LINE_ERRORS):
            return True
        if getattr(error, LOGGED, False):
            return False
        record.msg, record.args = PREFIX + "%s", (error,)
        record.exc_info, record.exc_text = None, None
        setattr(error, LOGGED, True)
        return True


class CallerReports(logging.Filter):
    """Drop the lines of :func:`fail_in_one_line`: the caller prints the error itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a line logged by :func:`fail_in_one_line`."""
        return not getattr(record, LOGGED, False)


class ClientFailures(logging.Filter):
    r"""Drop the simulation engine's tracebacks of failed ClientApps; keep their root exception.

    Examples
    --------
    >>> failures = ClientFailures()
    >>> text = "ray::ClientAppActor.run()\nKeyError: 'arrays'\nflwr.ClientAppException: x"
    >>> record = logging.LogRecord("flwr", ERROR, "", 0, text, None, None)
    >>> failures.filter(record), failures.root
    (False, "KeyError: 'arrays'")
    """

    def __init__(self) -> None:
        super().__init__()
        self.root = ""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for an error record of a ClientApp failure, remembering its root."""
        text = ANSI.sub("", record.getMessage())
        if record.levelno < ERROR or not any(word in text for word in CLIENT_FAILURE):
            return True
        for name, message in EXCEPTION_LINE.findall(text):
            if not any(wrapper in name for wrapper in WRAPPERS):
                self.root = self.root or f"{name.rsplit('.', 1)[-1]}: {message.strip()}"[:300]
                break
        return False

    def explain(self, error: WorkerDiscoveryError) -> WorkerDiscoveryError:
        """Return ``error`` with the ClientApp's own exception for the engine's wrapped one."""
        head, found, _ = str(error).partition("could not say which worker it is")
        if not (found and self.root):
            return error
        return WorkerDiscoveryError(
            f"{head}{found} (is multilevel_mod in its ClientApp's mods?): {self.root}"
        )


@contextmanager
def client_failures(logger: logging.Logger | None = None) -> Iterator[ClientFailures]:
    """Within the block, failed ClientApps leave no traceback in Flower's log (the discovery)."""
    logger = logger or logging.getLogger("flwr")
    failures = ClientFailures()
    logger.addFilter(failures)
    try:
        yield failures
    finally:
        logger.removeFilter(failures)


def report_in_one_line(logger: logging.Logger | None = None) -> None:
    """Install :class:`OneLineErrors` on Flower's logger (once)."""
    logger = logger or logging.getLogger("flwr")
    if not any(isinstance(f, OneLineErrors) for f in logger.filters):
        logger.addFilter(OneLineErrors())


def fail_in_one_line(error: Exception) -> Exception:
    """Log ``error`` as one line now and return what to raise.

    A ``ValueError`` of an argument check (``"<name>: <expected>, got <value>"``)
    becomes a :class:`~flwr_multilevel.errors.ConfigError` of the same text.

    Examples
    --------
    >>> str(fail_in_one_line(ValueError("tau: expected an integer >= 1, got 0")))
    'tau: expected an integer >= 1, got 0'
    """
    if isinstance(error, ValueError) and not isinstance(error, ConfigError):
        key, _, message = str(error).partition(": ")
        error = ConfigError(key, message) if message else ConfigError("MLLSGD", str(error))
    report_in_one_line()
    if not getattr(error, LOGGED, False):
        log(ERROR, PREFIX + "%s", ANSI.sub("", str(error)), extra={LOGGED: True})
        setattr(error, LOGGED, True)
    return error
