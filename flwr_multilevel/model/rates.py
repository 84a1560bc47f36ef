"""Operating rates: the probability p_i that worker i takes a step in a time step.

A named distribution assigns rates to workers by a seeded draw, never by the
worker's index, so "10% slow workers" means a random tenth of them, spread over
the hubs as chance has it.
"""

from collections.abc import Sequence

import numpy as np

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.lists import number_list

DISTRIBUTIONS = ("fixed", "uniform", "two_level", "explicit")


def _check_rate(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise ConfigError(key, f"expected a rate p in (0, 1], got {value!r}")
    return float(value)


def parse_rate_list(values: str | float | Sequence[float]) -> list[float]:
    """Return a list of rates from a number, a list or a comma-separated string.

    Examples
    --------
    >>> parse_rate_list("1.0, 0.5")
    [1.0, 0.5]
    """
    return number_list("rates.values", values, float)


# pylint: disable=too-many-arguments
def operating_rates(
    num_workers: int,
    distribution: str = "fixed",
    *,
    seed: int = 0,
    p: float = 1.0,
    low: float = 0.1,
    high: float = 1.0,
    slow_fraction: float = 0.1,
    p_slow: float = 0.6,
    p_fast: float = 0.9,
    values: str | float | Sequence[float] | None = None,
) -> np.ndarray:
    """Draw one operating rate per worker.

    Parameters
    ----------
    num_workers : int
        Number of workers N.
    distribution : str (default: "fixed")
        ``fixed`` (every worker at ``p``), ``uniform`` (each worker drawn from
        U[low, high]), ``two_level`` (``round(slow_fraction * N)`` workers,
        chosen at random, at ``p_slow``; the rest at ``p_fast``) or
        ``explicit`` (``values``, one per worker in worker order, or one for all).
    seed : int (default: 0)
        Seed of the draw that assigns rates to workers.
    p, low, high, slow_fraction, p_slow, p_fast : float
        Parameters of the distributions above.
    values : str | float | Sequence[float] | None (default: None)
        Explicit rates, as a number, a list or a comma-separated string.

    Returns
    -------
    numpy.ndarray
        ``N`` rates in (0, 1].

    Raises
    ------
    ConfigError
        Unknown distribution, a rate outside (0, 1], ``low > high``, a
        fraction outside [0, 1], or the wrong number of explicit values.

    Examples
    --------
    >>> operating_rates(4, "two_level", seed=1, slow_fraction=0.25).tolist()
    [0.9, 0.9, 0.9, 0.6]
    """
    rng = np.random.default_rng([seed, 0x7A7E5])
    if distribution == "fixed":
        return np.full(num_workers, _check_rate("rates.p", p))
    if distribution == "uniform":
        lo, hi = _check_rate("rates.low", low), _check_rate("rates.high", high)
        if lo > hi:
            raise ConfigError("rates.low", f"expected low <= high ({hi}), got {lo}")
        return rng.uniform(lo, hi, size=num_workers)
    if distribution == "two_level":
        slow, fast = _check_rate("rates.p_slow", p_slow), _check_rate("rates.p_fast", p_fast)
        if isinstance(slow_fraction, bool) or not 0.0 <= slow_fraction <= 1.0:
            raise ConfigError(
                "rates.slow_fraction", f"expected a number in [0, 1], got {slow_fraction!r}"
            )
        rates = np.full(num_workers, fast)
        num_slow = int(round(slow_fraction * num_workers))
        rates[rng.permutation(num_workers)[:num_slow]] = slow
        return rates
    if distribution == "explicit":
        if values is None:
            raise ConfigError(
                "rates.values", "expected one rate per worker for distribution 'explicit'"
            )
        rates_list = parse_rate_list(values)
        if len(rates_list) == 1:
            rates_list = rates_list * num_workers
        if len(rates_list) != num_workers:
            raise ConfigError(
                "rates.values",
                f"expected {num_workers} rates (one per worker) or one for all, "
                f"got {len(rates_list)}",
            )
        return np.array([_check_rate("rates.values", r) for r in rates_list])
    raise ConfigError(
        "rates.distribution",
        f"expected one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}",
    )


COIN_STREAM = 0  # stream id of a worker's coins; mini-batch draws use another stream


def coin_stream(seed: int, server_round: int, worker_id: int) -> np.random.Generator:
    """Return the generator of worker ``worker_id``'s coins in round ``server_round``.

    Every Bernoulli(p_i) draw of MLL-SGD comes from here, so the draws depend on
    ``(seed, round, worker)`` only, never on which process runs the worker.
    """
    return np.random.default_rng([seed, server_round, worker_id, COIN_STREAM])


def coin_flips(
    seed: int, server_round: int, worker_id: int, time_steps: int, rate: float
) -> np.ndarray:
    """Return one Bernoulli(``rate``) draw per time step: whether the worker steps then.

    Examples
    --------
    >>> coin_flips(0, 1, 0, 4, 1.0).tolist()
    [True, True, True, True]
    >>> int(coin_flips(0, 1, 0, 1000, 0.3).sum()) in range(250, 350)
    True
    """
    return coin_stream(seed, server_round, worker_id).random(time_steps) < rate
