"""The worker ClientApp: MLL-SGD's time steps on a worker's fixed partition."""

from functools import lru_cache

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import WorkerTask, config_number, make_worker_train

from .data import load_dataset, partition
from .models import build_model

app = ClientApp()


@lru_cache(maxsize=8)
def _partitions(name: str, root: str, scheme: str, num_workers: int, seed: int) -> list:  # type: ignore[type-arg]
    return partition(len(load_dataset(name, root).y_train), num_workers, scheme, seed)


@lru_cache(maxsize=256)
def _local_data(
    name: str, root: str, scheme: str, num_workers: int, seed: int, worker_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset(name, root)
    idx = torch.from_numpy(_partitions(name, root, scheme, num_workers, seed)[worker_id])
    return data.x_train[idx].contiguous(), data.y_train[idx].contiguous()


@lru_cache(maxsize=8)
def _model(name: str, dataset: str, root: str) -> torch.nn.Module:
    data = load_dataset(dataset, root)
    return build_model(name, data.input_shape, data.num_classes)


def load_task(config: ConfigRecord, context: Context) -> WorkerTask:
    """Return this worker's model and local data, loaded once per process."""
    threads = int(config_number(config, "torch-threads", 0))
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    worker_id = int(
        config_number(config, "worker-id", float(context.node_config.get("partition-id", 0)))
    )
    dataset, root = str(config["dataset"]), str(config["data-root"])
    x, y = _local_data(
        dataset,
        root,
        str(config["partition"]),
        int(config_number(config, "num-workers")),
        int(config_number(config, "seed")),
        worker_id,
    )
    return WorkerTask(_model(str(config["model"]), dataset, root), x, y)


app.train()(make_worker_train(load_task))


@app.query("worker")
def query_worker(msg: Message, context: Context) -> Message:
    """Tell the ServerApp which worker (partition) this node is."""
    partition_id = int(context.node_config["partition-id"])
    return Message(
        RecordDict({"worker": MetricRecord({"partition-id": partition_id})}), reply_to=msg
    )
