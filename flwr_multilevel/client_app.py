"""The worker ClientApp: MLL-SGD's time steps on a worker's fixed partition."""

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from flwr.app import ConfigRecord, Context
from flwr.clientapp import ClientApp

from .clients import WorkerTask, config_number, make_worker_train, multilevel_mod
from .data import load_dataset, partition
from .models import build_model, resolve_device

app = ClientApp(mods=[multilevel_mod])


@dataclass(frozen=True)
class _Split:
    """What fixes the partitions: every worker computes the same split from it."""

    dataset: str
    root: str
    scheme: str
    num_workers: int
    seed: int
    alpha: float
    shards: int


@lru_cache(maxsize=8)
def _partitions(split: _Split) -> list[np.ndarray]:
    labels = load_dataset(split.dataset, split.root).y_train.numpy()
    return partition(
        labels,
        split.num_workers,
        split.scheme,
        split.seed,
        alpha=split.alpha,
        shards_per_worker=split.shards,
    )


SPLITS_KEPT = 2  # the local data of every worker of this many splits stay resident
_LOCAL: OrderedDict[tuple[_Split, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = (
    OrderedDict()
)


def _local_data(split: _Split, worker_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a worker's partition, gathered once per process for every worker of the split."""
    workers = _LOCAL.get((split, device))
    if workers is None:
        workers = _LOCAL[(split, device)] = {}
        while len(_LOCAL) > SPLITS_KEPT:
            _LOCAL.popitem(last=False)
    else:
        _LOCAL.move_to_end((split, device))
    if (local := workers.get(worker_id)) is None:
        data = load_dataset(split.dataset, split.root)
        idx = torch.from_numpy(_partitions(split)[worker_id])
        x, y = data.x_train[idx].to(device).contiguous(), data.y_train[idx].to(device).contiguous()
        local = workers[worker_id] = (x, y)
    return local


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
    split = _Split(
        dataset,
        root,
        str(config["partition"]),
        int(config_number(config, "num-workers")),
        int(config_number(config, "seed")),
        config_number(config, "partition-alpha", 0.5),
        int(config_number(config, "partition-shards", 2)),
    )
    device = _device(str(config.get("device", "cpu")))
    x, y = _local_data(split, worker_id, device)
    return WorkerTask(_model(str(config["model"]), dataset, root, device), x, y)


app.train()(make_worker_train(load_task))
