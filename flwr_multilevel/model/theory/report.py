"""Every quantity of the theory for one network, as a JSON-ready dict.

The numbers come from the pure functions of :mod:`flwr_multilevel.model.theory`;
:mod:`flwr_multilevel.model.theory.text` formats them for the terminal.
"""

import math
from typing import Any

import networkx as nx
import numpy as np

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import Hierarchy
from flwr_multilevel.model.mixing import spectrum
from flwr_multilevel.model.theory.assumptions import mixing_checks
from flwr_multilevel.model.theory.bound import corollary1_holds, theorem1_bound
from flwr_multilevel.model.theory.factors import drift_factor, gamma_factor, local_factor
from flwr_multilevel.model.theory.step_size import (
    STEP_SIZE_RATE_FLOOR,
    largest_step_size,
    workers_without_guarantee,
)

CONSTANTS = ("L", "sigma2", "beta", "f_gap")


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


def _check_schedule(tau: int, q: int, time_steps: int, lr: float) -> None:
    """Raise ConfigError unless tau, q and time_steps are integers >= 1 and lr a number > 0."""
    for key, value in (("tau", tau), ("q", q), ("time_steps", time_steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(key, f"expected an integer >= 1, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise ConfigError("lr", f"expected a number > 0, got {lr!r}")


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
    _check_schedule(tau, q, time_steps, lr)
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
        report.update(_theorem1(a, p, zeta, tau, q, time_steps, lr, constants))
    return report


# pylint: disable=too-many-arguments
def _theorem1(
    a: np.ndarray,
    p: np.ndarray,
    zeta: float,
    tau: int,
    q: int,
    time_steps: int,
    lr: float,
    constants: dict[str, float],
) -> dict[str, Any]:
    """Return the step-size limit and the bound at ``eta = lr``, all constants given."""
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
    return {
        "largest_step_size": _plain(eta_max),
        "lr_satisfies_step_size": bool(lr <= eta_max),
        "bound": {name: _plain(v) for name, v in bound.as_dict().items()},
    }
