"""Hubs, their workers, and the weights MLL-SGD derives from them.

Workers are numbered ``0..N-1`` hub by hub: hub 0 owns the first ``sizes[0]``
workers, hub 1 the next ``sizes[1]``, and so on. With worker weights ``w_i``
(1, or the size of the worker's local data set) the paper defines

* ``v_i = w_i / sum_{j in hub(i)} w_j``: weight of worker i inside its hub,
* ``a_i = w_i / w_tot``: global weight of worker i,
* ``b_d = sum_{i in hub d} w_i / w_tot``: weight of hub d.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.lists import number_list


@dataclass(frozen=True)
class Hierarchy:
    """D disjoint sub-networks, each a hub with its workers.

    Build one with :func:`build_hierarchy`, which validates its input.

    Attributes
    ----------
    sizes : tuple[int, ...]
        Number of workers of each hub.
    weights : numpy.ndarray
        Worker weights ``w_i`` (shape ``(N,)``, all > 0).
    rates : numpy.ndarray
        Operating rates ``p_i`` in (0, 1] (shape ``(N,)``).
    """

    sizes: tuple[int, ...]
    weights: np.ndarray
    rates: np.ndarray
    hub_of: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hub_of = np.repeat(np.arange(len(self.sizes)), self.sizes)
        object.__setattr__(self, "hub_of", hub_of)

    @property
    def num_hubs(self) -> int:
        """Number of hubs D."""
        return len(self.sizes)

    @property
    def num_workers(self) -> int:
        """Total number of workers N."""
        return int(sum(self.sizes))

    def members(self, hub: int) -> list[int]:
        """Return the worker ids of ``hub``."""
        start = int(sum(self.sizes[:hub]))
        return list(range(start, start + self.sizes[hub]))

    @property
    def v(self) -> np.ndarray:
        """Weight of each worker inside its hub (sums to 1 per hub)."""
        hub_totals = np.bincount(self.hub_of, weights=self.weights)
        return self.weights / hub_totals[self.hub_of]

    @property
    def a(self) -> np.ndarray:
        """Global weight of each worker (sums to 1)."""
        return self.weights / self.weights.sum()

    @property
    def b(self) -> np.ndarray:
        """Weight of each hub (sums to 1)."""
        return np.bincount(self.hub_of, weights=self.a, minlength=self.num_hubs)

    @property
    def mean_rate(self) -> float:
        """Weighted mean operating rate ``P = sum_i a_i p_i``."""
        return float(self.a @ self.rates)

    @property
    def rate_variance_term(self) -> float:
        """``sum_i a_i^2 p_i``, the weight of the variance term of Theorem 1."""
        return float((self.a**2) @ self.rates)


def hub_sizes(
    num_hubs: int | None,
    workers: int | str | Sequence[int],
    *,
    keys: tuple[str, str] = ("hubs.count", "hubs.workers"),
) -> tuple[int, ...]:
    """Return the number of workers of each hub: the one parser of workers per hub.

    Parameters
    ----------
    num_hubs : int | None
        Number of hubs D (>= 1); None: as many hubs as ``workers`` lists (one
        for a single count).
    workers : int | str | Sequence[int]
        Workers per hub: one count for every hub, or one count per hub, as a
        number, a sequence or a comma-separated string (``"3,2"``). A single
        count (``4``, ``"4"``, ``[4]``) stands for every hub.
    keys : tuple[str, str] (default: ("hubs.count", "hubs.workers"))
        The names of ``num_hubs`` and ``workers`` in error messages (the
        config keys, or an argument such as MLLSGD's ``hubs``).

    Returns
    -------
    tuple[int, ...]
        ``D`` positive counts.

    Raises
    ------
    ConfigError
        ``num_hubs`` or a count is not a positive integer, a list has the
        wrong length, or a string has an empty or non-integer item.

    Examples
    --------
    >>> hub_sizes(3, 4), hub_sizes(3, "4"), hub_sizes(3, [2, 3, 5])
    ((4, 4, 4), (4, 4, 4), (2, 3, 5))
    >>> hub_sizes(None, "3,2"), hub_sizes(None, 4)
    ((3, 2), (4,))
    """
    count_key, workers_key = keys
    if num_hubs is not None and (
        isinstance(num_hubs, bool) or not isinstance(num_hubs, int) or num_hubs < 1
    ):
        raise ConfigError(count_key, f"expected an integer >= 1, got {num_hubs!r}")
    sizes = number_list(workers_key, workers, int)
    if num_hubs is not None and len(sizes) == 1:
        sizes = sizes * num_hubs
    if not sizes:
        raise ConfigError(workers_key, f"expected at least one worker count, got {workers!r}")
    if num_hubs is not None and len(sizes) != num_hubs:
        raise ConfigError(
            workers_key, f"expected one worker count per hub ({num_hubs}), got {len(sizes)}"
        )
    for hub, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, int):
            raise ConfigError(workers_key, f"expected integers, got {size!r} for hub {hub}")
        if size < 1:
            raise ConfigError(
                workers_key,
                f"expected at least 1 worker per hub, got {size} for hub {hub} (an empty hub)",
            )
    return tuple(sizes)


def build_hierarchy(
    sizes: Sequence[int],
    weights: Sequence[float] | np.ndarray,
    rates: Sequence[float] | np.ndarray,
) -> Hierarchy:
    """Validate and assemble a :class:`Hierarchy`.

    Parameters
    ----------
    sizes : Sequence[int]
        Workers per hub, as returned by :func:`hub_sizes`.
    weights : Sequence[float]
        One weight ``w_i > 0`` per worker.
    rates : Sequence[float]
        One operating rate ``p_i`` in (0, 1] per worker.

    Returns
    -------
    Hierarchy
        The validated network.

    Raises
    ------
    ConfigError
        A length does not match the number of workers, a weight is not
        positive and finite, or a rate is outside (0, 1].

    Examples
    --------
    >>> h = build_hierarchy([1, 2], [1, 1, 2], [1.0, 0.5, 0.5])
    >>> h.b.tolist()
    [0.25, 0.75]
    """
    n = int(sum(sizes))
    w = np.asarray(weights, dtype=np.float64)
    p = np.asarray(rates, dtype=np.float64)
    if w.shape != (n,):
        raise ConfigError("weighting", f"expected {n} worker weights, got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ConfigError("weighting", "expected every worker weight > 0 and finite")
    if p.shape != (n,):
        raise ConfigError("rates", f"expected {n} operating rates (one per worker), got {p.size}")
    bad = np.flatnonzero(~((p > 0) & (p <= 1)))
    if bad.size:
        raise ConfigError(
            "rates",
            f"expected every operating rate p in (0, 1], got {p[bad[0]]!r} for worker {bad[0]}",
        )
    return Hierarchy(tuple(int(s) for s in sizes), w, p)
