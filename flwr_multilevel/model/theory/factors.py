"""The factors of Theorem 1 as functions of zeta, the second-largest eigenvalue modulus of H.

``Gamma(zeta)`` enters the step-size condition, ``A(zeta)`` the topology term and
``(2 - zeta) / (1 - zeta)`` the local-drift term of the bound (paper.md 3.1-3.3).
"""

import math


def _check_zeta(zeta: float) -> float:
    zeta = float(zeta)
    if not zeta >= 0.0:
        raise ValueError(f"expected zeta >= 0, got {zeta!r}")
    return zeta


def gamma_factor(zeta: float) -> float:
    """Return ``Gamma = zeta/(1-zeta^2) + 2/(1-zeta) + zeta/(1-zeta)^2``.

    The factor of the step-size condition.

    Parameters
    ----------
    zeta : float
        Second-largest eigenvalue modulus of H, in [0, 1).

    Returns
    -------
    float
        Gamma (2 at ``zeta = 0``); ``math.inf`` for ``zeta >= 1`` (H does not mix).

    Raises
    ------
    ValueError
        ``zeta`` is negative or NaN.

    Examples
    --------
    >>> gamma_factor(0.0), round(gamma_factor(0.5), 6), gamma_factor(1.0)
    (2.0, 6.666667, inf)
    """
    z = _check_zeta(zeta)
    if z >= 1.0:
        return math.inf
    return z / (1.0 - z**2) + 2.0 / (1.0 - z) + z / (1.0 - z) ** 2


def drift_factor(zeta: float) -> float:
    """Return ``A = zeta^2/(1-zeta^2) + 2 zeta/(1-zeta) + 1/(1-zeta)^2``.

    The factor of the topology term of Theorem 1.

    Parameters
    ----------
    zeta : float
        Second-largest eigenvalue modulus of H, in [0, 1).

    Returns
    -------
    float
        A (1 at ``zeta = 0``); ``math.inf`` for ``zeta >= 1``.

    Raises
    ------
    ValueError
        ``zeta`` is negative or NaN.

    Examples
    --------
    >>> drift_factor(0.0), round(drift_factor(0.5), 6)
    (1.0, 6.333333)
    """
    z = _check_zeta(zeta)
    if z >= 1.0:
        return math.inf
    return z**2 / (1.0 - z**2) + 2.0 * z / (1.0 - z) + 1.0 / (1.0 - z) ** 2


def local_factor(zeta: float) -> float:
    """Return ``(2 - zeta) / (1 - zeta)``, the factor of the local-drift term of Theorem 1.

    Parameters
    ----------
    zeta : float
        Second-largest eigenvalue modulus of H, in [0, 1).

    Returns
    -------
    float
        The factor (2 at ``zeta = 0``); ``math.inf`` for ``zeta >= 1``.

    Raises
    ------
    ValueError
        ``zeta`` is negative or NaN.

    Examples
    --------
    >>> local_factor(0.0), local_factor(0.5)
    (2.0, 3.0)
    """
    z = _check_zeta(zeta)
    if z >= 1.0:
        return math.inf
    return (2.0 - z) / (1.0 - z)
