"""Virtual time: the time slots a round lasts.

A time slot is one tick of the common clock: in every slot, worker i
completes a gradient step with probability ``p_i``. MLL-SGD never waits, so a
round of tau time steps lasts tau slots and worker i takes Binomial(tau, p_i)
steps. A synchronous "wait for the slowest" baseline (Local SGD or HL-SGD as
deployed) makes every worker take exactly tau steps, so a round lasts until
the slowest worker's tau-th success.

Both modes read the same coin stream of a worker, the one
:func:`flwr_multilevel.model.rates.coin_flips` uses: the first tau coins are the
worker's MLL-SGD steps, and the waiting worker keeps flipping until its
tau-th success. Everything is a pure function of ``(seed, round, worker)``.
"""

from collections.abc import Sequence

import numpy as np

from flwr_multilevel.model.rates import coin_stream


def slots_to_finish(seed: int, server_round: int, worker_id: int, tau: int, rate: float) -> int:
    """Return the number of time slots worker ``worker_id`` needs for tau steps.

    Slot t succeeds when the t-th draw of the worker's coin stream is below
    ``rate``; the result is the index (1-based) of the tau-th success, a
    negative-binomial draw with mean ``tau / rate``.

    Parameters
    ----------
    seed : int
        Experiment seed.
    server_round : int
        Round (1-based).
    worker_id : int
        Global worker index.
    tau : int
        Steps the worker must take.
    rate : float
        Operating rate p_i in (0, 1].

    Returns
    -------
    int
        Slots until the tau-th successful slot, at least tau.

    Raises
    ------
    ValueError
        ``rate`` outside (0, 1] or ``tau`` < 1.

    Examples
    --------
    >>> slots_to_finish(0, 1, 0, tau=8, rate=1.0)
    8
    >>> slots_to_finish(0, 1, 0, tau=8, rate=0.5) >= 8
    True
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate: expected a probability in (0, 1], got {rate!r}")
    if tau < 1:
        raise ValueError(f"tau: expected an integer >= 1, got {tau!r}")
    rng = coin_stream(seed, server_round, worker_id)
    done, slots = 0, 0
    chunk = int(np.ceil(tau / rate)) + 16
    while True:
        hits = np.flatnonzero(rng.random(chunk) < rate)
        if done + len(hits) >= tau:
            return slots + int(hits[tau - done - 1]) + 1
        done += len(hits)
        slots += chunk


def round_slots(
    seed: int, server_round: int, rates: Sequence[float], tau: int, wait_for_slowest: bool
) -> int:
    """Return how many time slots one round lasts.

    Parameters
    ----------
    seed : int
        Experiment seed.
    server_round : int
        Round (1-based).
    rates : Sequence[float]
        Operating rate of every worker, indexed by worker id.
    tau : int
        Time steps (MLL-SGD) or required steps (waiting) per round.
    wait_for_slowest : bool
        False: MLL-SGD, the round lasts tau slots. True: the round lasts
        until every worker has taken tau steps.

    Returns
    -------
    int
        ``tau``, or the largest :func:`slots_to_finish` over the workers.

    Examples
    --------
    >>> round_slots(0, 1, [0.5, 0.9], tau=4, wait_for_slowest=False)
    4
    >>> round_slots(0, 1, [1.0, 1.0], tau=4, wait_for_slowest=True)
    4
    """
    if not wait_for_slowest:
        return tau
    return max(
        slots_to_finish(seed, server_round, worker, tau, float(rate))
        for worker, rate in enumerate(rates)
    )
