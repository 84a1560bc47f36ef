"""The data of the baseline: a data set split into one fixed partition per worker.

Every worker (and the server) computes the same split from the run config,
so no partition is ever sent over the network.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from flwr_multilevel.experiment.data import Dataset, load_dataset
from flwr_multilevel.experiment.local_data import Split as EngineSplit
from flwr_multilevel.experiment.local_data import fixed_sample, split_partitions, worker_data

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
    """Return the data split a run config describes (``data.name``, ``data.partition``, ...)."""
    return Split(
        str(run_config["data.name"]),
        str(Path(str(run_config.get("data.root", "data"))).expanduser().absolute()),
        str(run_config["data.partition"]),
        num_workers(run_config),
        int(run_config["seed"]),
        float(run_config.get("data.alpha", 0.5)),
        int(run_config.get("data.shards_per_worker", 2)),
    )


def load_data(split: Split) -> Dataset:
    """Return the whole data set (digits is embedded; the others come from torchvision)."""
    return load_dataset(split.dataset, split.root)


def partitions(split: Split) -> list[np.ndarray]:
    """Return the training-example indices of every worker.

    ``iid``, ``unequal`` (the paper's 5/10/20/25/40% groups), ``dirichlet``
    or ``shards`` (the last two from flwr-datasets); the engine's own split.
    """
    return split_partitions(_engine_split(split))


def load_partition(
    split: Split, worker_id: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return worker ``worker_id``'s training inputs and labels, on ``device`` (kept resident)."""
    return worker_data(_engine_split(split), worker_id, device)


def load_centralized(
    split: Split, train_examples: int = 0, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return the server's (training, test) sets to score the global model on.

    ``train_examples`` > 0 keeps a fixed, seeded sample of the training set
    (the engine's sample: the same examples as ``flwr-multilevel run``).
    """
    data = load_data(split)
    train = fixed_sample(data.x_train, data.y_train, train_examples or None, seed)
    return train, (data.x_test, data.y_test)


def _engine_split(split: Split) -> EngineSplit:
    return EngineSplit(*split)
