"""The one place that starts Flower's simulation engine from Python.

``flwr.simulation.run_simulation`` is deprecated in Flower 1.42 in favour of
``flwr run``; when it goes, only this module changes.
"""

import os
import warnings

from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

POLL_INTERVAL = 0.01  # seconds between reply polls of Flower's in-memory grid (its default: 0.1)


def tune_grid(grid: Grid, interval: float | None = None) -> None:
    """Make the simulation engine's grid poll for replies every ``interval`` seconds.

    Flower's ``InMemoryGrid`` sleeps ``pull_interval`` (0.1 s) between polls,
    so every round of a short simulation waits for the next multiple of it.
    Grids without that setting are left as they are.

    Examples
    --------
    >>> class Polling:
    ...     pull_interval = 0.1
    >>> grid = Polling()
    >>> tune_grid(grid)  # type: ignore[arg-type]
    >>> grid.pull_interval
    0.01
    """
    if isinstance(getattr(grid, "pull_interval", None), (int, float)):
        grid.pull_interval = POLL_INTERVAL if interval is None else interval  # type: ignore[attr-defined]


def run_in_simulation(
    server_app: ServerApp,
    client_app: ClientApp,
    num_supernodes: int,
    cpus_per_worker: float,
    gpus_per_worker: float = 0.0,
) -> None:
    """Run ``server_app`` with ``num_supernodes`` virtual nodes of ``client_app`` on Ray.

    With ``gpus_per_worker > 0`` Ray is given every visible GPU and packs
    ``1 / gpus_per_worker`` workers on each.
    """
    # pylint: disable=import-outside-toplevel
    import torch
    from flwr.simulation import run_simulation

    num_gpus = torch.cuda.device_count() if gpus_per_worker > 0 else 0
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker},
        "init_args": {"num_cpus": os.cpu_count() or 1, "num_gpus": num_gpus},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend_config,  # type: ignore[arg-type]
        )
