"""Errors the command line reports in one line: invalid input, and a simulation without result."""


class ConfigError(ValueError):
    """Invalid user input, named by the key it came from.

    ``str(error)`` is a single line, ``"<key>: <what was expected>, got <what came>"``,
    which the command line prints as it is (exit status 2, no traceback).

    Parameters
    ----------
    key : str
        Dotted config key (``hubs.count``) or the name of the argument at fault.
    message : str
        What was expected and what was found.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class SimulationError(RuntimeError):
    """The simulation engine ended without the ServerApp finishing (exit status 1)."""


class RunAborted(RuntimeError):
    """A hub kept failing (no valid reply, or its strategy failed) round after round (exit 1)."""


class WorkerDiscoveryError(RuntimeError):
    """The grid does not hold the expected workers, or they did not answer in time (exit 1)."""


class FlowerCompatError(RuntimeError):
    """The installed Flower lacks a private name this package relies on, or it changed (exit 1).

    Raised by :mod:`flwr_multilevel.flower_compat`, the one module that reaches
    into Flower's internals, where running without the name would change
    results or behaviour; ``str(error)`` names it, the installed Flower and
    the tested range.
    """
