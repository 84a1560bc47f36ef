"""The worker ClientApp: MLL-SGD's time steps on a worker's fixed partition."""

from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp

from flwr_multilevel.clients import WorkerTask, config_number, make_worker_train, multilevel_mod
from flwr_multilevel.experiment.data import load_dataset
from flwr_multilevel.experiment.local_data import Split, worker_data
from flwr_multilevel.experiment.models import build_model, resolve_device

app = ClientApp(mods=[multilevel_mod])


@lru_cache(maxsize=16)
def _device(name: str) -> str:
    return str(resolve_device(name))


@lru_cache(maxsize=8)
def _model(name: str, dataset: str, root: str, device: str) -> torch.nn.Module:
    data = load_dataset(dataset, root)
    return build_model(name, data.input_shape, data.num_classes).to(device)


def load_task(config: ConfigRecord, context: Context) -> WorkerTask:
    """Return this worker's model and local data, loaded once per process."""
    threads = int(config_number(config, "torch-threads", 0))
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    worker_id = int(
        config_number(config, "worker-id", float(context.node_config.get("partition-id", 0)))
    )
    dataset, root = str(config["dataset"]), str(config["data-root"])
    split = Split(
        dataset,
        root,
        str(config["partition"]),
        int(config_number(config, "num-workers")),
        int(config_number(config, "seed")),
        config_number(config, "partition-alpha", 0.5),
        int(config_number(config, "partition-shards", 2)),
    )
    device = _device(str(config.get("device", "cpu")))
    x, y = worker_data(split, worker_id, device)
    return WorkerTask(_model(str(config["model"]), dataset, root, device), x, y)


app.train()(make_worker_train(load_task))
