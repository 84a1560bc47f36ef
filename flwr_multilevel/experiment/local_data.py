"""A worker's local data: the split every process computes alike, resident once loaded.

No partition is ever sent over the network: the ClientApp (and the Flower-form
baseline in ``baselines/mll_sgd``) rebuild the same split from the run's
settings, and every worker's slice stays in memory for the rest of the process.

In a deployment Flower starts a fresh ClientApp process for every message, so
nothing stays in memory: with ``FLWR_MULTILEVEL_CACHE`` set to a folder, each
worker's slice is also kept there (``.npy`` arrays per worker, keyed by the
split) and later processes map it in milliseconds instead of loading and
partitioning the whole data set. ``flwr-multilevel deploy`` sets it for its
SuperNodes.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


CACHE_ENV = "FLWR_MULTILEVEL_CACHE"  # folder of the on-disk partition cache ("" or unset: none)
CACHE_FORMAT = 1  # bump when the cached content changes


@dataclass(frozen=True)
class WorkerPart:
    """One worker's training examples, and the shape of the data set they come from."""

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int


def cache_dir(split: Split, worker_id: int) -> Path | None:
    """Return the folder worker ``worker_id``'s slice of ``split`` is cached in (None: no cache).

    Under ``$FLWR_MULTILEVEL_CACHE``; the names hash everything that fixes the
    slice (data set, its resolved root, scheme, workers, seed, alpha, shards)
    and :data:`CACHE_FORMAT`. It holds ``x.npy``, ``y.npy`` and ``meta.json``.
    """
    folder = os.environ.get(CACHE_ENV, "").strip()
    if not folder:
        return None
    root = "" if split.dataset == "digits" else str(Path(split.root).expanduser().resolve())
    fields = [CACHE_FORMAT, split.dataset, root, split.scheme, split.num_workers, split.seed]
    fields += [float(split.alpha), int(split.shards)]
    key = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:24]
    return Path(folder).expanduser() / f"{split.dataset}-{key}" / f"worker-{worker_id}"


def _read_part(folder: Path) -> WorkerPart | None:
    """Return the cached slice, its arrays mapped (pages are read as training touches them)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        x = np.load(folder / "x.npy", mmap_mode="c")  # copy-on-write: writable, never written
        y = np.load(folder / "y.npy", mmap_mode="c")
        return WorkerPart(x, y, tuple(int(v) for v in meta["input_shape"]), meta["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, or damaged: computed again


def _write_part(folder: Path, part: WorkerPart) -> None:
    """Write ``part`` to ``folder`` atomically (other processes may read or write it too)."""
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        np.save(tmp / "x.npy", part.x)
        np.save(tmp / "y.npy", part.y)
        meta = {"input_shape": list(part.input_shape), "num_classes": int(part.num_classes)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)  # a damaged one
        os.replace(tmp, folder)
    except OSError:  # another process was first, or a read-only or full disk: only costs time
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def worker_part(split: Split, worker_id: int) -> WorkerPart:
    """Return worker ``worker_id``'s slice of ``split``: from the disk cache, else computed.

    Examples
    --------
    >>> part = worker_part(Split("digits", "data", "iid", 4, 0), 1)
    >>> part.input_shape, part.num_classes, len(part.x) == len(part.y)
    ((1, 8, 8), 10, True)
    """
    folder = cache_dir(split, worker_id)
    if folder is not None and (cached := _read_part(folder)) is not None:
        return cached
    data = load_dataset(split.dataset, split.root)
    idx = torch.from_numpy(split_partitions(split)[worker_id])
    part = WorkerPart(
        data.x_train[idx].numpy(),
        data.y_train[idx].numpy(),
        data.input_shape,
        data.num_classes,
    )
    if folder is not None:
        _write_part(folder, part)
    return part


SPLITS_KEPT = 2  # the local data of every worker of this many splits stay resident
_RESIDENT: OrderedDict[tuple[Split, str], dict[int, tuple[torch.Tensor, torch.Tensor]]] = (
    OrderedDict()
)
_SHAPES: dict[Split, tuple[tuple[int, ...], int]] = {}  # input shape, classes of loaded splits


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
        part = worker_part(split, worker_id)
        _SHAPES[split] = (part.input_shape, part.num_classes)
        x = torch.from_numpy(part.x).to(device).contiguous()
        y = torch.from_numpy(part.y).to(device).contiguous()
        local = workers[worker_id] = (x, y)
    return local


def input_spec(split: Split) -> tuple[tuple[int, ...], int]:
    """Return the input shape and class count of ``split``'s data set.

    Known without loading the data set once a worker's slice was loaded
    (:func:`worker_data`), from the disk cache too.

    Examples
    --------
    >>> input_spec(Split("digits", "data", "iid", 4, 0))
    ((1, 8, 8), 10)
    """
    if split not in _SHAPES:
        data = load_dataset(split.dataset, split.root)
        _SHAPES[split] = (data.input_shape, data.num_classes)
    return _SHAPES[split]


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
