"""Theorem 1's step-size condition: who can meet it, and the largest step size that does.

For every worker i the condition reads

``4 p_i - p_i^2 - 2 >= eta L (a_i p_i (beta + 1) - a_i p_i^2 + p_i^2)
+ 8 L^2 eta^2 q^2 tau^2 Gamma(zeta)``.

The left-hand side is negative for ``p_i < 2 - sqrt(2)``, so a single slow
worker voids the guarantee.
"""

import math
from collections.abc import Sequence

import numpy as np

from flwr_multilevel.model.theory.factors import gamma_factor

STEP_SIZE_RATE_FLOOR = 2.0 - math.sqrt(2.0)
"""Operating rate at or below which the step-size condition cannot hold (about 0.586)."""


def step_size_lhs(p: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Return ``4 p - p^2 - 2``, the left-hand side of the step-size condition.

    Parameters
    ----------
    p : numpy.ndarray | Sequence[float] | float
        Operating rates.

    Returns
    -------
    numpy.ndarray
        Elementwise values, the shape of ``p``; <= 0 exactly for
        ``p <= 2 - sqrt(2)`` (within (0, 1]).

    Examples
    --------
    >>> step_size_lhs([1.0, 0.5]).tolist()
    [1.0, -0.25]
    """
    rates = np.asarray(p, dtype=np.float64)
    return np.asarray(4.0 * rates - rates**2 - 2.0)


def _no_guarantee(p: np.ndarray) -> np.ndarray:
    """Mask of the rates whose step-size condition no ``eta > 0`` can meet."""
    return (step_size_lhs(p) <= 0.0) | (p <= STEP_SIZE_RATE_FLOOR)


def workers_without_guarantee(rates: np.ndarray | Sequence[float]) -> list[int]:
    """Return the workers for which Theorem 1's step-size condition cannot hold.

    Parameters
    ----------
    rates : numpy.ndarray | Sequence[float]
        Operating rates ``p_i``.

    Returns
    -------
    list[int]
        Indices ``i`` with ``4 p_i - p_i^2 - 2 <= 0``, i.e. ``p_i <= 2 - sqrt(2)``.

    Examples
    --------
    >>> workers_without_guarantee([1.0, 0.55, 0.6, 0.5])
    [1, 3]
    """
    p = np.asarray(rates, dtype=np.float64)
    return [int(i) for i in np.flatnonzero(_no_guarantee(p))]


def weights_and_rates(
    a: np.ndarray | Sequence[float], p: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``a`` and ``p`` as flat float64 arrays; raise ValueError unless they pair up."""
    a_arr = np.asarray(a, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if a_arr.shape != p_arr.shape or a_arr.size == 0:
        raise ValueError(
            f"expected one weight per operating rate, got {a_arr.size} weights "
            f"and {p_arr.size} rates"
        )
    return a_arr, p_arr


def largest_step_size(
    a: np.ndarray | Sequence[float],
    p: np.ndarray | Sequence[float],
    zeta: float,
    tau: int,
    q: int,
    L: float,
    beta: float,
) -> float:
    """Return the largest step size ``eta`` that meets Theorem 1's condition for every worker.

    For worker i the condition reads ``d eta^2 + c_i eta <= lhs_i`` with
    ``lhs_i = 4 p_i - p_i^2 - 2``, ``c_i = L (a_i p_i (beta+1) - a_i p_i^2 + p_i^2)``
    and ``d = 8 L^2 q^2 tau^2 Gamma(zeta)``. It holds for ``0 <= eta <= eta_i``,
    the positive root, and the answer is ``min_i eta_i``.

    Parameters
    ----------
    a : numpy.ndarray | Sequence[float]
        Global worker weights ``a_i``.
    p : numpy.ndarray | Sequence[float]
        Operating rates ``p_i``.
    zeta : float
        Second-largest eigenvalue modulus of H.
    tau : int
        Local period.
    q : int
        Hub rounds between hub mixings.
    L : float
        Lipschitz constant of the gradients.
    beta : float
        The beta of Assumption 1 (4).

    Returns
    -------
    float
        The largest admissible ``eta``: 0.0 when some worker has
        ``p_i <= 2 - sqrt(2)`` (no ``eta > 0`` works) or when ``zeta >= 1``;
        ``math.inf`` when nothing constrains ``eta`` (``L = 0``).

    Raises
    ------
    ValueError
        ``a`` and ``p`` differ in length or are empty, or ``zeta`` is negative.

    Examples
    --------
    >>> round(largest_step_size([0.5, 0.5], [1.0, 1.0], 0.0, 1, 1, 1.0, 0.0), 6)
    0.220696
    >>> largest_step_size([0.5, 0.5], [1.0, 0.55], 0.0, 1, 1, 1.0, 0.0)
    0.0
    """
    a_arr, p_arr = weights_and_rates(a, p)
    if np.any(_no_guarantee(p_arr)):
        return 0.0
    lhs = step_size_lhs(p_arr)
    linear = L * (a_arr * p_arr * (beta + 1.0) - a_arr * p_arr**2 + p_arr**2)
    gamma = gamma_factor(zeta)
    quad = math.inf if math.isinf(gamma) else 8.0 * L**2 * q**2 * tau**2 * gamma
    # positive root of quad x^2 + linear x - lhs, in the form that stays exact for quad -> 0
    denom = linear + np.sqrt(linear**2 + 4.0 * quad * lhs)
    with np.errstate(divide="ignore"):
        roots = np.where(denom > 0.0, 2.0 * lhs / np.where(denom > 0.0, denom, 1.0), math.inf)
    return float(roots.min())
