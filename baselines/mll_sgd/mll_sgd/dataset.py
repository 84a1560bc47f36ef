"""The data of the baseline: a data set split into one fixed partition per worker.

Every worker (and the server) computes the same split from the run config,
so no partition is ever sent over the network.
"""

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from flwr_multilevel.data import Dataset, load_dataset, partition

from .utils import num_workers


class Split(NamedTuple):
    """What fixes the partitions (hashable, so that a process loads each split once)."""

    dataset: str
    root: str
    scheme: str
    num_workers: int
    seed: int
    alpha: float
    shards: int


def split_of(run_config: Mapping[str, Any]) -> Split:
    """Return the data split a run config describes (``dataset``, ``partition``, ...)."""
    return Split(
        str(run_config["dataset"]),
        str(Path(str(run_config.get("data-root", "data"))).expanduser().absolute()),
        str(run_config["partition"]),
        num_workers(run_config),
        int(run_config["seed"]),
        float(run_config.get("partition-alpha", 0.5)),
        int(run_config.get("partition-shards", 2)),
    )


def load_data(split: Split) -> Dataset:
    """Return the whole data set (digits is embedded; the others come from torchvision)."""
    return load_dataset(split.dataset, split.root)


@lru_cache(maxsize=8)
def partitions(split: Split) -> list[np.ndarray]:
    """Return the training-example indices of every worker.

    ``iid``, ``unequal`` (the paper's 5/10/20/25/40% groups), ``dirichlet``
    or ``shards`` (the last two from flwr-datasets).
    """
    labels = load_data(split).y_train.numpy()
    return partition(
        labels,
        split.num_workers,
        split.scheme,
        split.seed,
        alpha=split.alpha,
        shards_per_worker=split.shards,
    )


@lru_cache(maxsize=256)
def load_partition(
    split: Split, worker_id: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return worker ``worker_id``'s training inputs and labels, on ``device``."""
    data = load_data(split)
    idx = torch.from_numpy(partitions(split)[worker_id])
    return data.x_train[idx].to(device).contiguous(), data.y_train[idx].to(device).contiguous()


def load_centralized(
    split: Split, train_examples: int = 0, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return the server's (training, test) sets to score the global model on.

    ``train_examples`` > 0 keeps a fixed, seeded sample of the training set.
    """
    data = load_data(split)
    x_train, y_train = data.x_train, data.y_train
    if 0 < train_examples < len(y_train):
        rng = np.random.default_rng([seed, 11])
        idx = torch.from_numpy(np.sort(rng.choice(len(y_train), train_examples, replace=False)))
        x_train, y_train = x_train[idx], y_train[idx]
    return (x_train, y_train), (data.x_test, data.y_test)
