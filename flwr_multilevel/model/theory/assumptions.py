"""The paper's Assumption 2 on the hub mixing matrix H, as residuals."""

from collections.abc import Sequence

import networkx as nx
import numpy as np

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.mixing import TOLERANCE


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
