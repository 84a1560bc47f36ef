"""Theorem 1's bound on the average squared gradient norm of ``u_k``, term by term.

With ``a`` the global worker weights, ``p`` the operating rates, ``zeta`` the
second-largest eigenvalue modulus of H, ``tau`` the local period, ``q`` the hub
rounds between hub mixings and ``K`` the number of time steps, the bound is the
sum of four terms (:class:`Theorem1Bound`), valid when ``eta`` meets the
step-size condition (:mod:`flwr_multilevel.model.theory.step_size`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flwr_multilevel.model.theory.factors import drift_factor, local_factor
from flwr_multilevel.model.theory.step_size import weights_and_rates


def corollary1_holds(tau: int, q: int, K: int) -> bool:
    """Return whether Corollary 1 holds: ``q^2 tau^2 <= sqrt(K)`` and ``q tau < K``.

    Parameters
    ----------
    tau : int
        Local period.
    q : int
        Hub rounds between hub mixings.
    K : int
        Number of time steps.

    Returns
    -------
    bool
        True when both inequalities hold (then ``eta = 1 / (L sqrt(K))`` gives
        the ``O(1/sqrt(K))`` rate).

    Examples
    --------
    >>> corollary1_holds(2, 2, 256), corollary1_holds(2, 2, 255)
    (True, False)
    """
    period = q * tau
    return bool(period**4 <= K and period < K)


@dataclass(frozen=True)
class Theorem1Bound:
    """The four terms of Theorem 1's bound on ``E[(1/K) sum_k ||grad F(u_k)||^2]``.

    Attributes
    ----------
    optimisation : float
        ``2 (F(x_1) - F_inf) / (eta K)``.
    variance : float
        ``sigma^2 eta L sum_i a_i^2 p_i``.
    topology : float
        ``4 L^2 eta^2 sigma^2 q^3 tau^3 (1/(q tau) - 1/K) A(zeta) P``.
    local : float
        ``4 L^2 eta^2 sigma^2 (2-zeta)/(1-zeta) (tau^2 (q-1)(2q+1)/6 + (tau-1)(2tau+1)/6) P``.
    topology_limit : float
        The topology term as ``K -> infinity``: ``4 L^2 eta^2 sigma^2 q^2 tau^2 A(zeta) P``.
    """

    optimisation: float
    variance: float
    topology: float
    local: float
    topology_limit: float

    @property
    def total(self) -> float:
        """The bound: the sum of the four terms."""
        return self.optimisation + self.variance + self.topology + self.local

    @property
    def limit(self) -> float:
        """The bound as ``K -> infinity``: ``variance + topology_limit + local``."""
        return self.variance + self.topology_limit + self.local

    def as_dict(self) -> dict[str, float]:
        """Return the terms, ``total`` and ``limit`` as plain floats."""
        return {
            "optimisation": self.optimisation,
            "variance": self.variance,
            "topology": self.topology,
            "local": self.local,
            "total": self.total,
            "topology_limit": self.topology_limit,
            "limit": self.limit,
        }


def _scaled(coefficient: float, factor: float) -> float:
    """Return ``coefficient * factor`` with ``0 * inf = 0`` (a zero coefficient drops the term)."""
    return 0.0 if coefficient == 0.0 else coefficient * factor


def theorem1_bound(
    a: np.ndarray | Sequence[float],
    p: np.ndarray | Sequence[float],
    zeta: float,
    tau: int,
    q: int,
    K: int,
    eta: float,
    L: float,
    sigma2: float,
    f_gap: float,
) -> Theorem1Bound:
    """Return the right-hand side of Theorem 1, term by term.

    beta does not enter the bound, only the step-size condition
    (:func:`largest_step_size`); the bound is valid only when ``eta`` meets it.

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
    K : int
        Number of time steps.
    eta : float
        Step size.
    L : float
        Lipschitz constant of the gradients.
    sigma2 : float
        Variance bound ``sigma^2`` of the stochastic gradients.
    f_gap : float
        ``F(x_1) - F_inf``.

    Returns
    -------
    Theorem1Bound
        The four terms (``math.inf`` for the error terms when ``zeta >= 1``
        and ``sigma2 > 0``).

    Raises
    ------
    ValueError
        ``eta`` or ``K`` is not positive, ``a`` and ``p`` differ in length, or
        ``zeta`` is negative.

    Examples
    --------
    >>> bound = theorem1_bound([0.5, 0.5], [1.0, 1.0], 0.0, 1, 1, 100, 0.01, 1.0, 1.0, 1.0)
    >>> bound.optimisation, bound.variance, round(bound.total, 6)
    (2.0, 0.005, 2.005396)
    """
    a_arr, p_arr = weights_and_rates(a, p)
    if not eta > 0:
        raise ValueError(f"expected a step size eta > 0, got {eta!r}")
    if not K > 0:
        raise ValueError(f"expected K > 0 time steps, got {K!r}")
    mean_rate = float(a_arr @ p_arr)
    scale = 4.0 * L**2 * eta**2 * sigma2 * mean_rate
    period = float(q * tau)
    local_steps = tau**2 * (q - 1) * (2 * q + 1) / 6.0 + (tau - 1) * (2 * tau + 1) / 6.0
    drift = drift_factor(zeta)
    return Theorem1Bound(
        optimisation=2.0 * f_gap / (eta * K),
        variance=sigma2 * eta * L * float(a_arr**2 @ p_arr),
        topology=_scaled(scale * period**3 * (1.0 / period - 1.0 / K), drift),
        local=_scaled(scale * local_steps, local_factor(zeta)),
        topology_limit=_scaled(scale * period**2, drift),
    )
