"""The one place that starts Flower's simulation engine from Python.

``flwr.simulation.run_simulation`` is deprecated in Flower 1.42 in favour of
``flwr run``; when it goes, only this module changes.
"""

import logging
import os
import warnings

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp


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
    flower = logging.getLogger("flwr")
    notice = _DropDeprecationNotice()
    flower.addFilter(notice)  # this module is the one place that knows; users need not see it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes,
                backend_config=backend_config,  # type: ignore[arg-type]
            )
    finally:
        flower.removeFilter(notice)


class _DropDeprecationNotice(logging.Filter):
    """Drop Flower's "run_simulation is deprecated" banner (logged, not warned)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("DEPRECATED FEATURE" in message and "run_simulation" in message)
