"""The worker ClientApp: MLL-SGD's time steps on a worker's fixed partition."""

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


@lru_cache(maxsize=256)
def _local_data(split: _Split, worker_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset(split.dataset, split.root)
    idx = torch.from_numpy(_partitions(split)[worker_id])
    return data.x_train[idx].to(device).contiguous(), data.y_train[idx].to(device).contiguous()


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
    device = str(resolve_device(str(config.get("device", "cpu"))))
    x, y = _local_data(split, worker_id, device)
    return WorkerTask(_model(str(config["model"]), dataset, root, device), x, y)


app.train()(make_worker_train(load_task))
