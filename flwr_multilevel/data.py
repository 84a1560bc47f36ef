"""Data sets and their partition into worker-local data.

``digits`` (scikit-learn's bundled 8x8 handwritten digits, 1,797 images) is the
embedded default and needs no download. ``mnist`` and ``fashion_mnist`` come
through torchvision from ``root`` (downloaded there if missing and online).
Every data set is loaded once per process and kept in memory as tensors.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError

DATASETS = ("digits", "mnist", "fashion_mnist")
PARTITIONS = ("iid", "unequal")
TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000}
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


def _digits() -> Dataset:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    num_test = int(round(DIGITS_TEST_FRACTION * len(y)))
    test, train = order[:num_test], order[num_test:]
    return Dataset(x[train], y[train], x[test], y[test], 10)


def _torchvision(name: str, root: str) -> Dataset:
    from torchvision import datasets  # pylint: disable=import-outside-toplevel

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]
    try:
        train = cls(root=root, train=True, download=True)
        test = cls(root=root, train=False, download=True)
    except (RuntimeError, OSError) as err:
        raise ConfigError(
            "data.root", f"could not find or download {name} under {root!r} ({err})"
        ) from None

    def tensors(split) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
        return split.data.unsqueeze(1).float().div_(255.0), split.targets.long()

    (x_train, y_train), (x_test, y_test) = tensors(train), tensors(test)
    return Dataset(x_train, y_train, x_test, y_test, 10)


@lru_cache(maxsize=4)
def load_dataset(name: str, root: str = "data") -> Dataset:
    """Load a data set by name, once per process.

    Parameters
    ----------
    name : str
        ``digits``, ``mnist`` or ``fashion_mnist``.
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


def partition(num_examples: int, num_workers: int, scheme: str, seed: int) -> list[np.ndarray]:
    """Split ``range(num_examples)`` into fixed, disjoint worker partitions.

    The examples are shuffled with ``seed`` and cut into consecutive pieces
    of :func:`partition_sizes`.

    Returns
    -------
    list[numpy.ndarray]
        Sorted example indices of each worker.
    """
    sizes = partition_sizes(num_examples, num_workers, scheme, seed)
    order = np.random.default_rng([seed, 7]).permutation(num_examples)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]
