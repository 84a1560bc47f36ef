"""The worker ClientApp: the paper's worker (tau time steps, Bernoulli(p_i) coins, plain SGD).

``multilevel_mod`` answers the hubs' worker discovery and counts steps;
``make_worker_train`` turns a model and local data into MLL-SGD's time steps.
"""

from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp

from flwr_multilevel.clients import WorkerTask, make_worker_train, multilevel_mod
from flwr_multilevel.protocol.keys import PARTITION_ID, WORKER_ID

from .dataset import load_partition, split_of
from .model import device_of, resident_model

app = ClientApp(mods=[multilevel_mod])


def load_task(config: ConfigRecord, context: Context) -> WorkerTask:
    """Return this worker's model and local partition (loaded once per process).

    The hub names the worker in the train config's ``worker-id``; without it (a
    stock strategy driving the app) the node's ``partition-id`` is used.
    """
    worker_id = int(config.get(WORKER_ID, context.node_config.get(PARTITION_ID, 0)))  # type: ignore[arg-type]
    run_config = context.run_config
    split = split_of(run_config)
    device = device_of(str(run_config.get("simulation.device", "cpu")))
    x, y = load_partition(split, worker_id, device)
    return WorkerTask(resident_model(str(run_config["model.name"]), split, device), x, y)


app.train()(make_worker_train(load_task))
