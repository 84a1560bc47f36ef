"""Theorem 1 of the paper as numbers: its factors, step-size condition and bound.

Everything here is a pure function of numpy arrays and floats (paper.md 3.1-3.3).
With ``a`` the global worker weights, ``p`` the operating rates, ``zeta`` the
second-largest eigenvalue modulus of the hub mixing matrix H, ``tau`` the local
period, ``q`` the hub rounds between hub mixings and ``K`` the number of time
steps, Theorem 1 holds when, for every worker i,

``4 p_i - p_i^2 - 2 >= eta L (a_i p_i (beta + 1) - a_i p_i^2 + p_i^2)
+ 8 L^2 eta^2 q^2 tau^2 Gamma(zeta)``,

and then bounds the average squared gradient norm of the weighted-average model
``u_k`` by four terms (:class:`Theorem1Bound`). The left-hand side is negative
for ``p_i < 2 - sqrt(2)``, so a single slow worker voids the guarantee.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import Hierarchy
from flwr_multilevel.model.mixing import TOLERANCE, spectrum

STEP_SIZE_RATE_FLOOR = 2.0 - math.sqrt(2.0)
"""Operating rate at or below which the step-size condition cannot hold (about 0.586)."""

CONSTANTS = ("L", "sigma2", "beta", "f_gap")


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


def _weights_and_rates(
    a: np.ndarray | Sequence[float], p: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
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
    a_arr, p_arr = _weights_and_rates(a, p)
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
    a_arr, p_arr = _weights_and_rates(a, p)
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


def mixing_checks(
    mix: np.ndarray, graph: nx.Graph, b: np.ndarray | Sequence[float], tol: float = TOLERANCE
) -> dict[str, float | bool]:
    """Return the residuals of the paper's Assumption 2 for ``mix``.

    Parameters
    ----------
    mix : numpy.ndarray
        ``D x D`` mixing matrix H.
    graph : networkx.Graph
        Hub graph on the nodes ``0..D-1``.
    b : numpy.ndarray | Sequence[float]
        Hub weights.
    tol : float (default: 1e-9)
        Tolerance: absolute for the column sums, relative to ``max(b)`` for
        ``H b = b`` and the detailed balance, relative to ``max(1, max|H|)``
        for the support.

    Returns
    -------
    dict[str, float | bool]
        ``column_sums`` (``max |1^T H - 1^T|``), ``stationary``
        (``max |H b - b|``), ``detailed_balance``
        (``max |H diag(b) - (H diag(b))^T|``), ``support`` (H > 0 exactly on
        the graph's edges and the diagonal), ``nonnegative`` and ``ok`` (all
        of them within ``tol``).

    Raises
    ------
    ConfigError
        ``hubs.mixing``: H is not ``D x D`` with ``D = len(b)``.

    Examples
    --------
    >>> checks = mixing_checks(np.array([[0.75, 0.5], [0.25, 0.5]]), nx.path_graph(2), [0.5, 0.5])
    >>> checks["column_sums"], checks["stationary"], checks["ok"]
    (0.0, 0.125, False)
    """
    mix = np.asarray(mix, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    num_hubs = b_arr.size
    if mix.shape != (num_hubs, num_hubs):
        raise ConfigError(
            "hubs.mixing", f"expected a {num_hubs}x{num_hubs} matrix, got shape {mix.shape}"
        )
    column_sums = float(np.abs(mix.sum(axis=0) - 1.0).max())
    stationary = float(np.abs(mix @ b_arr - b_arr).max())
    balance = mix * b_arr  # H diag(b)
    detailed_balance = float(np.abs(balance - balance.T).max())
    scale = tol * max(1.0, float(np.abs(mix).max()))
    support = True
    for i in range(num_hubs):
        for j in range(num_hubs):
            on_support = i == j or graph.has_edge(i, j)
            if (mix[i, j] > scale) != on_support:
                support = False
    nonnegative = bool(np.all(mix >= -scale))
    b_scale = tol * float(b_arr.max())
    ok = (
        column_sums <= tol
        and stationary <= b_scale
        and detailed_balance <= b_scale
        and support
        and nonnegative
    )
    return {
        "column_sums": column_sums,
        "stationary": stationary,
        "detailed_balance": detailed_balance,
        "support": support,
        "nonnegative": nonnegative,
        "ok": bool(ok),
    }


def _check_constant(name: str, value: Any, positive: bool) -> float:
    relation = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"theory.{name}", f"expected a number {relation}, got {value!r}")
    number = float(value)
    too_big = number > 1e15  # the bound's products of four constants overflow beyond
    if not math.isfinite(number) or number < 0 or (positive and number == 0) or too_big:
        raise ConfigError(
            f"theory.{name}", f"expected a number {relation}, got {value!r} (finite, <= 1e15)"
        )
    return number


def _plain(value: float) -> float | None:
    """Return a finite float as it is, NaN and infinities as None (strict JSON)."""
    number = float(value)
    return number if math.isfinite(number) else None


def theory_report(
    hierarchy: Hierarchy,
    mix: np.ndarray,
    graph: nx.Graph,
    *,
    tau: int,
    q: int,
    time_steps: int,
    lr: float,
    L: float | None = None,
    sigma2: float | None = None,
    beta: float | None = None,
    f_gap: float | None = None,
) -> dict[str, Any]:
    """Return every quantity of the theory for a network, as a JSON-ready dict.

    Parameters
    ----------
    hierarchy : Hierarchy
        Hubs, worker weights and operating rates.
    mix : numpy.ndarray
        Hub mixing matrix H.
    graph : networkx.Graph
        Hub graph on ``0..D-1``.
    tau : int
        Local period.
    q : int
        Hub rounds between hub mixings.
    time_steps : int
        Number of time steps K.
    lr : float
        The configured step size; the bound is evaluated at ``eta = lr``.
    L, sigma2, beta, f_gap : float | None (default: None)
        Constants of Theorem 1 (``L > 0``, the others ``>= 0``). The step-size
        limit and the bound are computed only when all four are given.

    Returns
    -------
    dict[str, Any]
        Plain floats, ints, bools, strings, lists and dicts (None where a
        value is undefined or infinite): the network, the spectrum of H, the
        ``mixing_checks``, ``a``, ``b``, ``P``, ``sum_a2_p``, ``rate_floor``,
        ``workers_without_guarantee``, ``gamma``, ``drift_factor``,
        ``local_factor``, ``corollary1`` and, with all constants,
        ``largest_step_size``, ``lr_satisfies_step_size`` and ``bound``
        (:meth:`Theorem1Bound.as_dict`); else these are None and
        ``constants_missing`` names the missing keys.

    Raises
    ------
    ConfigError
        ``theory.L``, ``theory.sigma2``, ``theory.beta`` or ``theory.f_gap`` is
        not a finite number in range; ``lr``, ``tau``, ``q`` or ``time_steps``
        is not positive.

    Examples
    --------
    >>> from flwr_multilevel.model.hierarchy import build_hierarchy
    >>> h = build_hierarchy([1, 1], [1, 1], [1.0, 0.5])
    >>> r = theory_report(h, np.full((2, 2), 0.5), nx.path_graph(2), tau=2, q=2,
    ...                   time_steps=256, lr=0.01)
    >>> round(r["zeta"], 12), r["workers_without_guarantee"], r["constants_missing"]
    (0.0, [1], ['theory.L', 'theory.sigma2', 'theory.beta', 'theory.f_gap'])
    """
    for key, value in (("tau", tau), ("q", q), ("time_steps", time_steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(key, f"expected an integer >= 1, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ConfigError("lr", f"expected a number > 0, got {lr!r}")
    given = {"L": L, "sigma2": sigma2, "beta": beta, "f_gap": f_gap}
    constants = {
        name: _check_constant(name, value, positive=name == "L")
        for name, value in given.items()
        if value is not None
    }
    a, b, p = hierarchy.a, hierarchy.b, hierarchy.rates
    spec = spectrum(mix)
    zeta = spec.zeta
    period = q * tau
    report: dict[str, Any] = {
        "num_hubs": hierarchy.num_hubs,
        "num_workers": hierarchy.num_workers,
        "hub_sizes": list(hierarchy.sizes),
        "hub_edges": sorted([min(i, j), max(i, j)] for i, j in graph.edges if i != j),
        "tau": int(tau),
        "q": int(q),
        "time_steps": int(time_steps),
        "lr": float(lr),
        "zeta": _plain(zeta),
        "lambda_2": _plain(spec.lambda_2),
        "lambda_D": _plain(spec.lambda_d),
        "spectral_gap": _plain(spec.gap),
        "mixing_checks": mixing_checks(mix, graph, b),
        "a": [float(x) for x in a],
        "b": [float(x) for x in b],
        "rates": [float(x) for x in p],
        "P": hierarchy.mean_rate,
        "sum_a2_p": hierarchy.rate_variance_term,
        "rate_floor": STEP_SIZE_RATE_FLOOR,
        "workers_without_guarantee": workers_without_guarantee(p),
        "gamma": _plain(gamma_factor(zeta)),
        "drift_factor": _plain(drift_factor(zeta)),
        "local_factor": _plain(local_factor(zeta)),
        "q2_tau2": period**2,
        "sqrt_K": math.sqrt(time_steps),
        "corollary1": corollary1_holds(tau, q, time_steps),
        "constants": {name: constants.get(name) for name in CONSTANTS},
        "constants_missing": [f"theory.{n}" for n in CONSTANTS if n not in constants],
        "largest_step_size": None,
        "lr_satisfies_step_size": None,
        "bound": None,
    }
    if not report["constants_missing"]:
        eta_max = largest_step_size(a, p, zeta, tau, q, constants["L"], constants["beta"])
        bound = theorem1_bound(
            a,
            p,
            zeta,
            tau,
            q,
            time_steps,
            float(lr),
            constants["L"],
            constants["sigma2"],
            constants["f_gap"],
        )
        report["largest_step_size"] = _plain(eta_max)
        report["lr_satisfies_step_size"] = bool(lr <= eta_max)
        report["bound"] = {name: _plain(v) for name, v in bound.as_dict().items()}
    return report


def _num(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _short(values: Sequence[float], limit: int = 8) -> str:
    if len(values) <= limit:
        return "[" + ", ".join(_num(v) for v in values) + "]"
    arr = np.asarray(values, dtype=np.float64)
    return f"min {_num(arr.min())}, mean {_num(arr.mean())}, max {_num(arr.max())}"


def format_report(report: Mapping[str, Any]) -> str:
    """Return a :func:`theory_report` as readable lines for the terminal.

    Parameters
    ----------
    report : Mapping[str, Any]
        As returned by :func:`theory_report`.

    Returns
    -------
    str
        Multi-line text (no trailing newline).

    Examples
    --------
    >>> from flwr_multilevel.model.hierarchy import build_hierarchy
    >>> h = build_hierarchy([1, 1], [1, 1], [1.0, 1.0])
    >>> r = theory_report(h, np.full((2, 2), 0.5), nx.path_graph(2), tau=2, q=2,
    ...                   time_steps=256, lr=0.01)
    >>> print(format_report(r))
    MLL-SGD theory (Theorem 1)
    network      2 hubs [1, 1], 2 workers, 1 hub-graph edges
    ...
    theorem 1    constants not given; pass theory.L=... theory.sigma2=... theory.beta=... ...
    """
    r = report
    checks = r["mixing_checks"]
    period = r["q"] * r["tau"]
    lines = [
        "MLL-SGD theory (Theorem 1)",
        f"network      {r['num_hubs']} hubs {r['hub_sizes']}, {r['num_workers']} workers, "
        f"{len(r['hub_edges'])} hub-graph edges",
        f"schedule     tau={r['tau']}, q={r['q']} (hub mixing every {period} steps), "
        f"K={r['time_steps']} time steps, lr={_num(r['lr'])}",
        f"mixing H     zeta={_num(r['zeta'])}, lambda_2={_num(r['lambda_2'])}, "
        f"lambda_D={_num(r['lambda_D'])}, spectral gap={_num(r['spectral_gap'])}",
        f"H checks     {'pass' if checks['ok'] else 'FAIL'}: "
        f"|1^T H - 1^T|={_num(checks['column_sums'], '.2g')}, "
        f"|H b - b|={_num(checks['stationary'], '.2g')}, "
        f"|H diag(b) - (H diag(b))^T|={_num(checks['detailed_balance'], '.2g')}, "
        f"support {'ok' if checks['support'] else 'MISMATCH'}, "
        f"{'nonnegative' if checks['nonnegative'] else 'NEGATIVE ENTRIES'}",
        f"weights      a: {_short(r['a'])}; b: {_short(r['b'], limit=len(r['b']))}",
        f"rates        P = sum a_i p_i = {_num(r['P'])}, sum a_i^2 p_i = {_num(r['sum_a2_p'])}",
    ]
    slow = r["workers_without_guarantee"]
    if slow:
        ids = ", ".join(str(i) for i in slow[:10]) + (", ..." if len(slow) > 10 else "")
        lines.append(
            f"step size    {len(slow)} of {r['num_workers']} workers have p_i <= 2 - sqrt(2) = "
            f"{r['rate_floor']:.4f}; Theorem 1 gives no guarantee (workers {ids})"
        )
    else:
        lines.append(f"step size    every p_i > 2 - sqrt(2) = {r['rate_floor']:.4f}")
    lines += [
        f"factors      Gamma={_num(r['gamma'])}, A(zeta)={_num(r['drift_factor'])}, "
        f"(2-zeta)/(1-zeta)={_num(r['local_factor'])}",
        f"corollary 1  q^2 tau^2 = {r['q2_tau2']} "
        f"{'<=' if r['q2_tau2'] <= r['sqrt_K'] else '>'} sqrt(K) = {r['sqrt_K']:.4g}: "
        f"{'holds' if r['corollary1'] else 'does not hold'}",
    ]
    bound = r.get("bound")
    if bound is None:
        missing = " ".join(f"{name}=..." for name in r["constants_missing"])
        lines.append(f"theorem 1    constants not given; pass {missing}")
        return "\n".join(lines)
    c = r["constants"]
    verdict = "yes" if r["lr_satisfies_step_size"] else "NO, the bound does not apply"
    lines += [
        f"theorem 1    L={_num(c['L'])}, sigma2={_num(c['sigma2'])}, beta={_num(c['beta'])}, "
        f"F(x_1)-F_inf={_num(c['f_gap'])}",
        f"  largest step size {_num(r['largest_step_size'])}; lr={_num(r['lr'])} meets it: "
        f"{verdict}",
        f"  bound at eta=lr, K={r['time_steps']}: {_num(bound['total'])}",
        f"    optimisation 2 (F(x_1)-F_inf)/(eta K)   {_num(bound['optimisation'])}",
        f"    variance     sigma2 eta L sum a_i^2 p_i {_num(bound['variance'])}",
        f"    topology     (zeta, q tau)              {_num(bound['topology'])}",
        f"    local        (tau, q)                   {_num(bound['local'])}",
        f"  K -> infinity: {_num(bound['limit'])}",
    ]
    return "\n".join(lines)
