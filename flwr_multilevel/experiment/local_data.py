"""A worker's local data: the split every process computes alike, resident once loaded.

No partition is ever sent over the network: the ClientApp (and the Flower-form
baseline in ``baselines/mll_sgd``) rebuild the same split from the run's
settings, and every worker's slice stays in memory for the rest of the process.
"""

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from flwr_multilevel.experiment.data import load_dataset, partition


@dataclass(frozen=True)
class Split:
    """What fixes the partitions (hashable: a process computes each split once).

    Attributes
    ----------
    dataset : str
        Data set name (``digits``, ``mnist``, ...).
    root : str
        Folder of the torchvision-layout data.
    scheme : str
        ``iid``, ``unequal``, ``dirichlet`` or ``shards``.
    num_workers : int
        Number of partitions.
    seed : int
        Seed of the split.
    alpha : float (default: 0.5)
        Dirichlet concentration.
    shards : int (default: 2)
        Shards per worker.
    """

    dataset: str
    root: str
    scheme: str
    num_workers: int
    seed: int
    alpha: float = 0.5
    shards: int = 2


@lru_cache(maxsize=8)
def split_partitions(split: Split) -> list[np.ndarray]:
    """Return the training-example indices of every worker of ``split``.

    Examples
    --------
    >>> parts = split_partitions(Split("digits", "data", "iid", 4, 0))
    >>> len(parts), sum(len(p) for p in parts) == len(np.unique(np.concatenate(parts)))
    (4, True)
    """
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
_RESIDENT: OrderedDict[tuple[Split, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = (
    OrderedDict()
)


def worker_data(split: Split, worker_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return worker ``worker_id``'s training inputs and labels on ``device``.

    Gathered once per process and kept for every worker of the last
    ``SPLITS_KEPT`` splits (a process may serve any number of workers).

    Examples
    --------
    >>> x, y = worker_data(Split("digits", "data", "iid", 4, 0), 1, "cpu")
    >>> len(x) == len(y) == len(split_partitions(Split("digits", "data", "iid", 4, 0))[1])
    True
    """
    workers = _RESIDENT.get((split, device))
    if workers is None:
        workers = _RESIDENT[(split, device)] = {}
        while len(_RESIDENT) > SPLITS_KEPT:
            _RESIDENT.popitem(last=False)
    else:
        _RESIDENT.move_to_end((split, device))
    if (local := workers.get(worker_id)) is None:
        data = load_dataset(split.dataset, split.root)
        idx = torch.from_numpy(split_partitions(split)[worker_id])
        x, y = data.x_train[idx].to(device).contiguous(), data.y_train[idx].to(device).contiguous()
        local = workers[worker_id] = (x, y)
    return local


def fixed_sample(
    x: torch.Tensor, y: torch.Tensor, size: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a fixed, seeded sample of ``size`` examples (all of them if None or larger).

    The same examples at every evaluation of every run with ``seed``, in their
    original order: the training loss is scored on it.

    Examples
    --------
    >>> x, y = torch.arange(10.0), torch.arange(10)
    >>> fixed_sample(x, y, 3, 0)[1].tolist() == fixed_sample(x, y, 3, 0)[1].tolist()
    True
    >>> len(fixed_sample(x, y, None, 0)[0]), len(fixed_sample(x, y, 20, 0)[0])
    (10, 10)
    """
    if size is None or int(size) >= len(y):
        return x, y
    rng = np.random.default_rng([int(seed), 11])
    idx = torch.from_numpy(np.sort(rng.choice(len(y), int(size), replace=False)))
    return x[idx], y[idx]
