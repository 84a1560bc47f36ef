"""Theorem 1's report (:func:`~flwr_multilevel.model.theory.report.theory_report`) as text."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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
    >>> import networkx as nx
    >>> from flwr_multilevel.model.hierarchy import build_hierarchy
    >>> from flwr_multilevel.model.theory.report import theory_report
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
