"""Data sets and their partition into worker-local data.

``digits`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 images) is the
embedded default and needs no download. ``mnist``, ``fashion_mnist``,
``emnist_letters`` (26 classes) and ``cifar10`` come through torchvision from
``root`` (downloaded there if missing and online). Every data set is loaded
once per process and kept in memory as tensors.

Partitions: ``iid`` and the paper's ``unequal`` sizes are drawn here;
``dirichlet`` (label shares per worker ~ Dir(alpha)) and ``shards`` (each worker
gets a few label-sorted shards) are flwr-datasets partitioners applied to the
local labels.
"""

import contextlib
import gzip
import importlib.util
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flwr_multilevel.errors import ConfigError

DATASETS = ("digits", "mnist", "fashion_mnist", "emnist_letters", "cifar10")
PARTITIONS = ("iid", "unequal", "dirichlet", "shards")
TRAIN_SIZES = {
    "mnist": 60_000,
    "fashion_mnist": 60_000,
    "emnist_letters": 124_800,
    "cifar10": 50_000,
}
DIGITS_TEST_FRACTION = 0.25
# The paper's unequal split: 5 equal groups of workers hold 5, 10, 20, 25 and
# 40% of the data, i.e. per-worker shares 0.25 : 0.5 : 1 : 1.25 : 2.
UNEQUAL_SHARES = (0.25, 0.5, 1.0, 1.25, 2.0)


@dataclass(frozen=True)
class Dataset:
    """A classification data set held as tensors (inputs float32 in [0, 1])."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (C, H, W)."""
        return tuple(self.x_train.shape[1:])


def _digits_table() -> np.ndarray:
    """Return scikit-learn's digits table (64 pixels and the label per row) as ``load_digits``.

    The bundled ``digits.csv.gz`` is read the way ``load_digits`` reads it, but
    without importing scikit-learn (2-3 s at startup); ``load_digits`` itself
    is the fallback.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, mode="rt", encoding="utf-8") as file:
                return np.loadtxt(file, delimiter=",")
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


def _digits() -> Dataset:
    table = _digits_table()
    images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int, copy=False)
    x = torch.tensor(images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(target, dtype=torch.int64)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    num_test = int(round(DIGITS_TEST_FRACTION * len(y)))
    test, train = order[:num_test], order[num_test:]
    return Dataset(x[train], y[train], x[test], y[test], 10)


def _torchvision_splits(name: str, root: str) -> tuple[Any, Any]:
    from torchvision import datasets  # pylint: disable=import-outside-toplevel

    classes: dict[str, Callable[..., Any]] = {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "emnist_letters": partial(datasets.EMNIST, split="letters"),
        "cifar10": datasets.CIFAR10,
    }
    made = [p for p in (Path(root), *Path(root).parents) if not p.exists()]
    chatter = io.StringIO()  # torchvision prints download progress and retries
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            train = classes[name](root=root, train=True, download=True)
            test = classes[name](root=root, train=False, download=True)
    except (RuntimeError, OSError, ValueError) as err:
        for folder in made:  # leave no folders behind that this attempt created
            for sub in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                    sub.rmdir()
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(
            "data.root", f"could not find or download {name} under {root!r} ({reason})"
        ) from None
    return train, test


def _tensors(name: str, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (N, C, H, W) float32 inputs in [0, 1] and int64 labels from 0."""
    if name == "cifar10":  # numpy (N, 32, 32, 3) uint8, list of labels
        x = torch.from_numpy(np.ascontiguousarray(split.data)).permute(0, 3, 1, 2)
        return x.float().div_(255.0).contiguous(), torch.tensor(split.targets, dtype=torch.int64)
    x, y = split.data.unsqueeze(1), split.targets.long()
    if name == "emnist_letters":  # stored transposed, labels 1..26
        x, y = x.transpose(2, 3), y - 1
    return x.float().div_(255.0).contiguous(), y


def _torchvision(name: str, root: str) -> Dataset:
    train, test = _torchvision_splits(name, root)
    (x_train, y_train), (x_test, y_test) = _tensors(name, train), _tensors(name, test)
    return Dataset(x_train, y_train, x_test, y_test, int(y_train.max()) + 1)


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str = "data") -> Dataset:
    """Load a data set by name, once per process.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str (default: "data")
        torchvision root folder (ignored for digits).

    Raises
    ------
    ConfigError
        Unknown name, or the files can be neither found nor downloaded.
    """
    if name == "digits":
        return _digits()
    if name in TRAIN_SIZES:
        return _torchvision(name, str(Path(root).expanduser()))
    raise ConfigError("data.name", f"expected one of {', '.join(DATASETS)}, got {name!r}")


def train_size(name: str) -> int:
    """Return the number of training examples of a data set, without loading image files."""
    if name == "digits":
        return len(load_dataset("digits").y_train)
    if name in TRAIN_SIZES:
        return TRAIN_SIZES[name]
    raise ConfigError("data.name", f"expected one of {', '.join(DATASETS)}, got {name!r}")


def partition_sizes(num_examples: int, num_workers: int, scheme: str, seed: int) -> np.ndarray:
    """Return how many training examples each worker holds.

    ``iid``: equal sizes (differing by at most one). ``unequal``: the paper's
    split; workers are put in 5 groups by a seeded draw and hold per-worker
    shares 0.25 : 0.5 : 1 : 1.25 : 2 by group.

    Raises
    ------
    ConfigError
        Unknown scheme, or fewer examples than a worker needs (at least one each).

    Examples
    --------
    >>> partition_sizes(10, 3, "iid", 0).tolist()
    [4, 3, 3]
    """
    if num_workers > num_examples:
        raise ConfigError(
            "hubs.workers",
            f"expected at most {num_examples} workers (one training example each), "
            f"got {num_workers}",
        )
    if scheme == "iid":
        shares = np.ones(num_workers)
    elif scheme == "unequal":
        groups = np.arange(num_workers) * len(UNEQUAL_SHARES) // num_workers
        shares = np.array(UNEQUAL_SHARES)[np.random.default_rng([seed, 5]).permutation(groups)]
    else:
        raise ConfigError(
            "data.partition", f"expected one of {', '.join(PARTITIONS)}, got {scheme!r}"
        )
    exact = shares / shares.sum() * num_examples
    sizes = np.floor(exact).astype(int)
    remainder = num_examples - sizes.sum()
    sizes[np.argsort(-(exact - sizes), kind="stable")[:remainder]] += 1
    if sizes.min() < 1:
        raise ConfigError(
            "data.partition",
            f"the '{scheme}' split leaves a worker without data; use fewer workers",
        )
    return sizes


def _flwr_partition(
    labels: np.ndarray, num_workers: int, scheme: str, seed: int, alpha: float, shards: int
) -> list[np.ndarray]:
    """Apply a flwr-datasets partitioner to the labels; return each worker's indices."""
    # pylint: disable=import-outside-toplevel
    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    table = HFDataset.from_dict({"index": np.arange(len(labels)), "label": labels})
    partitioner: DirichletPartitioner | ShardPartitioner
    try:
        if scheme == "dirichlet":
            partitioner = DirichletPartitioner(
                num_partitions=num_workers,
                partition_by="label",
                alpha=alpha,
                min_partition_size=1,
                self_balancing=False,
                shuffle=True,
                seed=seed,
            )
        else:
            partitioner = ShardPartitioner(
                num_partitions=num_workers,
                partition_by="label",
                num_shards_per_partition=shards,
                shuffle=True,
                seed=seed,
            )
        partitioner.dataset = table
        with warnings.catch_warnings():  # pyarrow deprecations and Dirichlet resampling notes
            warnings.simplefilter("ignore")  # (a split that fails raises ValueError below)
            parts = [
                np.sort(np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64))
                for i in range(num_workers)
            ]
    except (ValueError, ZeroDivisionError) as err:
        field = "data.alpha" if scheme == "dirichlet" else "data.shards_per_worker"
        raise ConfigError(
            field,
            f"the '{scheme}' partition of {len(labels)} examples failed: "
            + " ".join(str(err).split())[:200],
        ) from None
    if min(len(p) for p in parts) < 1:
        raise ConfigError(
            "data.partition",
            f"the '{scheme}' split leaves a worker without data; use fewer workers",
        )
    return parts


def partition(
    labels: np.ndarray,
    num_workers: int,
    scheme: str,
    seed: int,
    *,
    alpha: float = 0.5,
    shards_per_worker: int = 2,
) -> list[np.ndarray]:
    """Split the training examples into fixed, disjoint worker partitions.

    ``iid`` and ``unequal``: the examples are shuffled with ``seed`` and cut
    into consecutive pieces of :func:`partition_sizes`. ``dirichlet``:
    flwr-datasets' ``DirichletPartitioner`` (each class is spread over the
    workers in proportions drawn from Dir(alpha); small alpha, skewed labels).
    ``shards``: flwr-datasets' ``ShardPartitioner`` (examples sorted by label,
    cut into ``num_workers * shards_per_worker`` shards, each worker gets
    ``shards_per_worker`` of them).

    Parameters
    ----------
    labels : numpy.ndarray
        Training labels, one per example.
    num_workers : int
        Number of partitions.
    scheme : str
        One of :data:`PARTITIONS`.
    seed : int
        Seed of the split.
    alpha : float (default: 0.5)
        Dirichlet concentration (``dirichlet`` only).
    shards_per_worker : int (default: 2)
        Shards per worker (``shards`` only).

    Returns
    -------
    list[numpy.ndarray]
        Sorted example indices of each worker.

    Raises
    ------
    ConfigError
        Unknown scheme, or a split that leaves a worker without data.

    Examples
    --------
    >>> [len(p) for p in partition(np.zeros(10), 3, "iid", 0)]
    [4, 3, 3]
    """
    labels = np.asarray(labels)
    if scheme in ("dirichlet", "shards"):
        if num_workers > len(labels):
            raise ConfigError(
                "hubs.workers",
                f"expected at most {len(labels)} workers (one training example each), "
                f"got {num_workers}",
            )
        if scheme == "shards" and num_workers * shards_per_worker > len(labels):
            raise ConfigError(
                "data.shards_per_worker",
                f"expected at most {len(labels) // num_workers} shards per worker "
                f"({len(labels)} examples, {num_workers} workers), got {shards_per_worker}",
            )
        return _flwr_partition(labels, num_workers, scheme, seed, alpha, shards_per_worker)
    sizes = partition_sizes(len(labels), num_workers, scheme, seed)
    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def label_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Return a ``(workers, classes)`` matrix: how many examples of each class each worker holds.

    Examples
    --------
    >>> label_counts(np.array([0, 1, 1]), [np.array([0, 1]), np.array([2])], 2).tolist()
    [[1, 1], [0, 1]]
    """
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for i, part in enumerate(parts):
        counts[i] = np.bincount(np.asarray(labels)[part], minlength=num_classes)
    return counts
