"""The worker ClientApp: MLL-SGD's time steps on a worker's fixed partition.

In a deployment Flower starts this app in a fresh process for every message:
it imports only what a worker needs (torch, Flower, the worker and the
partition code; no networkx, omegaconf, scikit-learn, matplotlib or
flwr-datasets, see ``tests/test_client_app_imports.py``) and reads its
partition from the disk cache when ``FLWR_MULTILEVEL_CACHE`` is set.
"""

from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp

from flwr_multilevel.clients import WorkerTask, config_number, make_worker_train, multilevel_mod
from flwr_multilevel.experiment.local_data import Split, input_spec, worker_data
from flwr_multilevel.experiment.models import build_model, resolve_device
from flwr_multilevel.protocol.keys import (
    DATA_ROOT,
    DATASET,
    DEVICE,
    MODEL,
    NUM_WORKERS,
    PARTITION,
    PARTITION_ALPHA,
    PARTITION_ID,
    PARTITION_SHARDS,
    SEED,
    TORCH_THREADS,
    WORKER_ID,
)

app = ClientApp(mods=[multilevel_mod])


@lru_cache(maxsize=16)
def _device(name: str) -> str:
    return str(resolve_device(name))


@lru_cache(maxsize=8)
def _model(name: str, split: Split, device: str) -> torch.nn.Module:
    input_shape, num_classes = input_spec(split)  # known from the worker's data: no data set load
    return build_model(name, input_shape, num_classes).to(device)


def load_task(config: ConfigRecord, context: Context) -> WorkerTask:
    """Return this worker's model and local data, loaded once per process."""
    threads = int(config_number(config, TORCH_THREADS, 0))
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    worker_id = int(
        config_number(config, WORKER_ID, float(context.node_config.get(PARTITION_ID, 0)))
    )
    dataset, root = str(config[DATASET]), str(config[DATA_ROOT])
    split = Split(
        dataset,
        root,
        str(config[PARTITION]),
        int(config_number(config, NUM_WORKERS)),
        int(config_number(config, SEED)),
        config_number(config, PARTITION_ALPHA, 0.5),
        int(config_number(config, PARTITION_SHARDS, 2)),
    )
    device = _device(str(config.get(DEVICE, "cpu")))
    x, y = worker_data(split, worker_id, device)
    return WorkerTask(_model(str(config[MODEL]), split, device), x, y)


app.train()(make_worker_train(load_task))
