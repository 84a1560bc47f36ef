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

The factors of zeta (:mod:`.factors`), the step-size condition
(:mod:`.step_size`), the bound (:mod:`.bound`), Assumption 2 on H
(:mod:`.assumptions`), all of them for one network (:mod:`.report`) and that
report as text (:mod:`.text`).
"""

from flwr_multilevel.model.theory.assumptions import mixing_checks
from flwr_multilevel.model.theory.bound import Theorem1Bound, corollary1_holds, theorem1_bound
from flwr_multilevel.model.theory.factors import drift_factor, gamma_factor, local_factor
from flwr_multilevel.model.theory.report import CONSTANTS, theory_report
from flwr_multilevel.model.theory.step_size import (
    STEP_SIZE_RATE_FLOOR,
    largest_step_size,
    step_size_lhs,
    workers_without_guarantee,
)
from flwr_multilevel.model.theory.text import format_report

__all__ = [
    "CONSTANTS",
    "STEP_SIZE_RATE_FLOOR",
    "Theorem1Bound",
    "corollary1_holds",
    "drift_factor",
    "format_report",
    "gamma_factor",
    "largest_step_size",
    "local_factor",
    "mixing_checks",
    "step_size_lhs",
    "theorem1_bound",
    "theory_report",
    "workers_without_guarantee",
]
