"""The checks of :class:`~flwr_multilevel.strategies.MLLSGD`'s arguments: pure functions.

Each returns the value in the form the strategy keeps, or raises a one-line
``ValueError`` that names the argument and what was expected.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ConfigRecord

from flwr_multilevel.protocol.keys import NUM_EXAMPLES, PER_WORKER, SEED, TIME_STEPS


def at_least(name: str, value: Any, low: int) -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``low``.

    Raises
    ------
    ValueError
        Otherwise, naming ``name``.

    Examples
    --------
    >>> at_least("tau", 4, 1)
    4
    >>> at_least("tau", True, 1)
    Traceback (most recent call last):
    ...
    ValueError: tau: expected an integer >= 1, got True
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def worker_rates(rates: float | Sequence[float], num_workers: int) -> np.ndarray:
    """Return MLLSGD's ``rates`` as one operating rate p_i in (0, 1] per worker.

    ``rates`` is one rate for every worker or one per worker (to draw them
    from a distribution, see :func:`flwr_multilevel.model.rates.operating_rates`).

    Raises
    ------
    ValueError
        A rate outside (0, 1], or a count other than 1 or ``num_workers``.

    Examples
    --------
    >>> worker_rates(0.5, 3).tolist()
    [0.5, 0.5, 0.5]
    """
    given = [rates] * num_workers if isinstance(rates, (int, float)) else list(rates)
    if len(given) != num_workers or not all(0 < float(p) <= 1 for p in given):
        raise ValueError(
            f"rates: expected one rate in (0, 1], or {num_workers} of them, got {rates!r}"
        )
    return np.array(given, dtype=np.float64)


def worker_weights(weights: str | Sequence[float], num_workers: int) -> list[float | None]:
    """Return each worker's weight w_i; None where it comes from the worker's first reply.

    ``"num-examples"`` (:data:`~flwr_multilevel.protocol.keys.NUM_EXAMPLES`)
    leaves every weight to the replies, ``"equal"`` makes them 1, a sequence gives them.

    Raises
    ------
    ValueError
        Another string, or not ``num_workers`` finite positive numbers.

    Examples
    --------
    >>> worker_weights("equal", 2), worker_weights("num-examples", 2)
    ([1.0, 1.0], [None, None])
    """
    if isinstance(weights, str):
        if weights not in (NUM_EXAMPLES, "equal"):
            raise ValueError(
                f"weights: expected '{NUM_EXAMPLES}', 'equal' or {num_workers} numbers, "
                f"got {weights!r}"
            )
        return [1.0 if weights == "equal" else None] * num_workers
    given = [float(w) for w in weights]
    if len(given) != num_workers or not all(np.isfinite(w) and w > 0 for w in given):
        raise ValueError(f"weights: expected {num_workers} positive numbers, got {weights!r}")
    return list(given)


def train_config(
    config: ConfigRecord | Mapping[str, Any] | None, tau: int, seed: int
) -> ConfigRecord:
    """Return the config every worker receives: the caller's, plus ``time-steps`` and ``seed``.

    The caller's object is not changed.

    Raises
    ------
    ValueError
        A key the hubs set per worker, a ``time-steps`` other than ``tau``,
        or a ``seed`` that is not an integer >= 0.

    Examples
    --------
    >>> dict(train_config({"lr": 0.1}, 4, 7))
    {'lr': 0.1, 'time-steps': 4, 'seed': 7}
    """
    record = ConfigRecord(dict((config or {}).items()))
    for key in PER_WORKER:
        if key in record:
            raise ValueError(f"train_config: '{key}' is set by each hub for its workers; remove it")
    if record.get(TIME_STEPS, tau) != tau:
        raise ValueError(
            f"train_config: '{TIME_STEPS}' must equal tau={tau}, got {record[TIME_STEPS]!r}"
        )
    chosen = record.get(SEED, seed)
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 0:
        raise ValueError(f"train_config: '{SEED}' must be an integer >= 0, got {chosen!r}")
    record[TIME_STEPS], record[SEED] = tau, chosen
    return record
