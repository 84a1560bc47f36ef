"""The draws of the batched path: every worker's coins and mini-batches of a round, stacked.

The batched engine (:mod:`flwr_multilevel.engines.batched_mllsgd`) takes its
draws from the worker's own ``step_schedule(seed, round, worker, tau, rate,
n_i, batch_size)``, so both paths draw the same numbers. Here they are laid
out for batched steps: per time step, the workers whose coin came up and the
global rows of their mini-batches (workers' data stored one after the other).
A worker with fewer examples than the batch size uses all of them, padded to
the common width with weight 0 (:func:`example_weights`).
"""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# step_schedule(seed, round, worker, tau, rate, n_i, batch_size) -> (coins, batches)
ScheduleFn = Callable[[int, int, int, int, float, int, int], tuple[np.ndarray, np.ndarray]]


class RoundDraws(NamedTuple):
    """One round's draws of every worker, ready for the batched steps.

    Attributes
    ----------
    steps : numpy.ndarray
        Steps each worker takes this round (``(N,)`` int64).
    active : numpy.ndarray
        Concatenated over time steps: the workers stepping at each (int64).
    rows : numpy.ndarray
        One row per entry of ``active``: the global example rows of its
        mini-batch, padded to the longest batch (``(len(active), B)`` int64).
    counts : list[int]
        How many workers step at each time step (``len == tau``).
    """

    steps: np.ndarray
    active: np.ndarray
    rows: np.ndarray
    counts: list[int]


def round_draws(  # pylint: disable=too-many-arguments
    schedule: ScheduleFn,
    seed: int,
    server_round: int,
    rates: np.ndarray,
    sizes: np.ndarray,
    time_steps: int,
    batch_size: int,
) -> RoundDraws:
    """Return every worker's coins and mini-batches of one round, in batched form.

    Worker i's local example j is global row ``offset_i + j`` with offsets the
    cumulative ``sizes`` (workers' data stored one after the other).

    Examples
    --------
    >>> sched = lambda s, r, w, t, p, n, b: (np.array([w == 0, True]), np.zeros((2, b), int))
    >>> d = round_draws(sched, 0, 1, np.ones(2), np.array([3, 4]), 2, 2)
    >>> d.steps.tolist(), d.active.tolist(), d.counts, d.rows.tolist()
    ([2, 1], [0, 0, 1], [1, 2], [[0, 0], [0, 0], [3, 3]])
    """
    num_workers = len(sizes)
    width = int(min(batch_size, int(sizes.max())))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rate_list, size_list = [float(r) for r in rates], [int(n) for n in sizes]
    draws = [
        schedule(seed, server_round, worker, time_steps, rate_list[worker], n, batch_size)
        for worker, n in enumerate(size_list)
    ]
    coins = np.stack([take for take, _ in draws], axis=1)  # (tau, N)
    if all(batches.shape[1] == width for _, batches in draws):
        rows = np.stack([batches for _, batches in draws], axis=1)  # (tau, N, B)
        rows += offsets[None, :, None]
    else:  # workers with fewer examples than the batch: pad with their first row, weight 0
        rows = np.empty((time_steps, num_workers, width), dtype=np.int64)
        for worker, (_, batches) in enumerate(draws):
            local = rows[:, worker, :]
            local[:, : batches.shape[1]] = batches + offsets[worker]
            local[:, batches.shape[1] :] = offsets[worker]
    active_t, active_w = np.nonzero(coins)  # ordered by time step, then worker
    counts = np.bincount(active_t, minlength=time_steps).tolist()
    return RoundDraws(
        coins.sum(axis=0).astype(np.int64), active_w, rows[active_t, active_w], counts
    )


def example_weights(sizes: np.ndarray, batch_size: int) -> np.ndarray | None:
    """Return per-example loss weights ``(N, B)``, or None when every batch is full.

    A worker with ``n_i < batch_size`` has a batch of ``n_i`` examples padded to
    the common width B; its real examples weigh ``1 / n_i``, the padding 0.

    Examples
    --------
    >>> example_weights(np.array([5, 9]), 4) is None
    True
    >>> example_weights(np.array([2, 9]), 4).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
    """
    batch = np.minimum(sizes, batch_size)
    width = int(batch.max())
    if np.all(batch == width):
        return None
    cols = np.arange(width)[None, :]
    return np.where(cols < batch[:, None], 1.0 / batch[:, None], 0.0).astype(np.float32)


__all__ = ["RoundDraws", "ScheduleFn", "example_weights", "round_draws"]
