"""What a Flower user's ClientApp uses to be an MLL-SGD worker.

* :func:`multilevel_mod` and :func:`time_steps` (with :func:`steps_taken`): make
  an existing ClientApp a worker around the user's own model, optimizer, loss
  and data loader;
* :func:`make_worker_train`: the paper's exact path (plain SGD on in-memory
  tensors), used by the experiments.
"""

from .mod import discovery_message, multilevel_mod, steps_taken, time_steps, worker_id
from .worker import WorkerTask, config_number, local_sgd, make_worker_train, step_schedule

__all__ = [
    "WorkerTask",
    "config_number",
    "discovery_message",
    "local_sgd",
    "make_worker_train",
    "multilevel_mod",
    "step_schedule",
    "steps_taken",
    "time_steps",
    "worker_id",
]
