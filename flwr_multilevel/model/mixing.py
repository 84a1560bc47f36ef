"""The hub mixing matrix H and its spectrum.

After every q-th hub round, hub d takes ``y_d = sum_j H[j, d] z_j`` (all hubs
at once). The analysis needs (paper.md 2.5):

* ``H[j, d] > 0`` exactly on hub-graph edges and on the diagonal,
* every column sums to 1 (``1^T H = 1^T``),
* ``H b = b``: the b-weighted average of the hub models is preserved.

``zeta``, the second-largest eigenvalue modulus of H, measures how slowly the
gossip mixes; the error terms of Theorem 1 grow like ``1 / (1 - zeta)^2``.
"""

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from flwr_multilevel.errors import ConfigError

MIXINGS = ("auto", "metropolis", "complete")
TOLERANCE = 1e-9


def complete_mixing(b: np.ndarray) -> np.ndarray:
    """Return ``H = b 1^T``: every hub receives the exact b-weighted average.

    Examples
    --------
    >>> complete_mixing(np.array([0.25, 0.75])).tolist()
    [[0.25, 0.25], [0.75, 0.75]]
    """
    b = np.asarray(b, dtype=np.float64)
    return np.outer(b, np.ones_like(b))


def metropolis_hastings(graph: nx.Graph, b: np.ndarray) -> np.ndarray:
    """Return the Metropolis-Hastings mixing matrix of ``graph`` for the target ``b``.

    For an edge ``i != j``:
    ``H[i, j] = min(1 / (deg_j + 1), (b_i / b_j) / (deg_i + 1))``, and the
    diagonal takes the rest of each column. Then ``H diag(b)`` is symmetric,
    columns sum to 1, ``H b = b`` and the diagonal is at least
    ``1 / (deg + 1)``. With uniform ``b`` this is the usual symmetric
    ``min(1 / (deg_i + 1), 1 / (deg_j + 1))``.

    Parameters
    ----------
    graph : networkx.Graph
        Connected hub graph on ``0..D-1``.
    b : numpy.ndarray
        Hub weights (positive).

    Returns
    -------
    numpy.ndarray
        The ``D x D`` matrix H.

    Examples
    --------
    >>> metropolis_hastings(nx.path_graph(3), np.ones(3) / 3).round(3).tolist()
    [[0.667, 0.333, 0.0], [0.333, 0.333, 0.333], [0.0, 0.333, 0.667]]
    """
    b = np.asarray(b, dtype=np.float64)
    num_hubs = b.size
    deg = np.array([graph.degree(d) for d in range(num_hubs)], dtype=np.float64)
    mix = np.zeros((num_hubs, num_hubs))
    for i, j in graph.edges:
        if i == j:
            continue
        mix[i, j] = min(1.0 / (deg[j] + 1), (b[i] / b[j]) / (deg[i] + 1))
        mix[j, i] = min(1.0 / (deg[i] + 1), (b[j] / b[i]) / (deg[j] + 1))
    mix[np.diag_indices(num_hubs)] = 1.0 - mix.sum(axis=0)
    return mix


def check_mixing(mix: np.ndarray, graph: nx.Graph, b: np.ndarray, tol: float = TOLERANCE) -> None:
    """Check that ``mix`` satisfies the paper's Assumption 2 for ``graph`` and ``b``.

    Parameters
    ----------
    mix : numpy.ndarray
        Candidate ``D x D`` mixing matrix.
    graph : networkx.Graph
        The hub graph; the support of H must be its edges plus the diagonal.
    b : numpy.ndarray
        Hub weights.
    tol : float (default: 1e-9)
        Relative tolerance of the equalities.

    Raises
    ------
    ConfigError
        Naming ``hubs.mixing`` and the first property that fails.

    Examples
    --------
    >>> check_mixing(np.eye(2), nx.path_graph(2), np.ones(2) / 2)
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: hubs.mixing: expected H[0, 1] > 0 on ...
    """
    key = "hubs.mixing"
    mix = np.asarray(mix, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num_hubs = b.size
    if mix.shape != (num_hubs, num_hubs):
        raise ConfigError(key, f"expected a {num_hubs}x{num_hubs} matrix, got shape {mix.shape}")
    if not np.all(np.isfinite(mix)):
        raise ConfigError(key, "expected finite entries")
    scale = tol * max(1.0, float(np.abs(mix).max()))
    for i in range(num_hubs):
        for j in range(num_hubs):
            on_support = i == j or graph.has_edge(i, j)
            if on_support and mix[i, j] <= scale:
                where = "the diagonal" if i == j else f"hub-graph edge ({i}, {j})"
                raise ConfigError(key, f"expected H[{i}, {j}] > 0 on {where}, got {mix[i, j]:.3g}")
            if not on_support and abs(mix[i, j]) > scale:
                raise ConfigError(
                    key,
                    f"expected H[{i}, {j}] = 0 (hubs {i} and {j} are not neighbours), "
                    f"got {mix[i, j]:.3g}",
                )
    sums = mix.sum(axis=0)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > tol:
        raise ConfigError(
            key, f"expected every column to sum to 1, column {worst} sums to {sums[worst]:.12g}"
        )
    drift = np.abs(mix @ b - b)
    if drift.max() > tol * b.max():
        raise ConfigError(
            key,
            f"expected H b = b (the hub weights), off by {drift.max():.3g} "
            f"at hub {int(np.argmax(drift))}",
        )


def load_mixing_file(path: str | Path, num_hubs: int) -> np.ndarray:
    """Read a ``D x D`` mixing matrix (whitespace or comma separated rows).

    Raises
    ------
    ConfigError
        Missing file, non-numeric entries or a wrong shape.
    """
    from flwr_multilevel.model.topology import read_number_rows  # pylint: disable=import-outside-toplevel

    file = Path(path)
    rows = read_number_rows(path, "hubs.mixing", f"one of {', '.join(MIXINGS)} or a matrix file")
    if len({len(row) for row in rows}) != 1:
        raise ConfigError("hubs.mixing", f"{file}: expected rows of equal length")
    mix = np.array(rows, dtype=np.float64)
    if mix.shape != (num_hubs, num_hubs):
        raise ConfigError(
            "hubs.mixing", f"{file}: expected a {num_hubs}x{num_hubs} matrix, got {mix.shape}"
        )
    return mix


def mixing_matrix(graph: nx.Graph, b: np.ndarray, method: str | np.ndarray = "auto") -> np.ndarray:
    """Return the validated mixing matrix for ``graph`` and hub weights ``b``.

    Parameters
    ----------
    graph : networkx.Graph
        Connected hub graph on ``0..D-1``.
    b : numpy.ndarray
        Hub weights.
    method : str | numpy.ndarray (default: "auto")
        ``auto`` (``b 1^T`` on a complete graph, Metropolis-Hastings
        otherwise), ``metropolis``, ``complete`` (complete graphs only), a
        matrix, or a path to a matrix file.

    Returns
    -------
    numpy.ndarray
        H, checked with :func:`check_mixing`.

    Raises
    ------
    ConfigError
        Unknown method, ``complete`` on an incomplete graph, or a matrix that
        fails the checks.

    Examples
    --------
    >>> mixing_matrix(nx.complete_graph(2), np.array([0.5, 0.5])).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    num_hubs = len(b)
    is_complete = graph.number_of_edges() == num_hubs * (num_hubs - 1) // 2
    if isinstance(method, np.ndarray):
        mix = method
    elif method == "auto":
        mix = complete_mixing(b) if is_complete else metropolis_hastings(graph, b)
    elif method == "metropolis":
        mix = metropolis_hastings(graph, b)
    elif method == "complete":
        if not is_complete:
            raise ConfigError("hubs.mixing", "expected a complete hub graph for mixing 'complete'")
        mix = complete_mixing(b)
    else:
        mix = load_mixing_file(method, num_hubs)
    check_mixing(mix, graph, b)
    return np.asarray(mix, dtype=np.float64)


@dataclass(frozen=True)
class Spectrum:
    """Spectral quantities of H.

    Attributes
    ----------
    zeta : float
        Second-largest eigenvalue modulus (0 for a single hub or ``b 1^T``).
    lambda_2 : float
        Second-largest eigenvalue (real part); NaN for one hub.
    lambda_d : float
        Smallest eigenvalue (real part); NaN for one hub.
    gap : float
        Spectral gap ``1 - zeta``.
    """

    zeta: float
    lambda_2: float
    lambda_d: float

    @property
    def gap(self) -> float:
        """Spectral gap ``1 - zeta``."""
        return 1.0 - self.zeta


def spectrum(mix: np.ndarray) -> Spectrum:
    """Return zeta, lambda_2, lambda_D of a mixing matrix.

    One eigenvalue closest to 1 (the leading eigenvalue of a valid H) is set
    aside; zeta is the largest modulus among the others, lambda_2 and
    lambda_D their largest and smallest real parts.

    Examples
    --------
    >>> s = spectrum(np.array([[0.5, 0.5], [0.5, 0.5]]))
    >>> round(s.zeta, 12), round(s.gap, 12)
    (0.0, 1.0)
    """
    eig = np.linalg.eigvals(np.asarray(mix, dtype=np.float64))
    if eig.size == 1:
        return Spectrum(0.0, float("nan"), float("nan"))
    rest = np.delete(eig, int(np.argmin(np.abs(eig - 1.0))))  # drop one eigenvalue 1
    real = np.sort(rest.real)[::-1]
    return Spectrum(float(np.abs(rest).max()), float(real[0]), float(real[-1]))


SPARSE_HUBS = 512  # from this many hubs, a sparse H is applied by its nonzeros only
SPARSE_DENSITY = 0.1  # "sparse": at most this share of H's entries nonzero


def is_sparse(mix: np.ndarray) -> bool:
    """Return whether ``mix`` is large and sparse enough to be applied by its nonzeros.

    A dense ``H^T models`` costs ``D^2`` model-sized products per gossip (at
    4,000 hubs of a 7,850-parameter model, 15 s on 2 cores), though a ring or
    path has ``3 D`` nonzeros; below :data:`SPARSE_HUBS` hubs the dense
    product is as fast and keeps every earlier result bit for bit.

    Examples
    --------
    >>> is_sparse(np.eye(600)), is_sparse(np.full((600, 600), 1 / 600)), is_sparse(np.eye(3))
    (True, False, False)
    """
    return bool(len(mix) >= SPARSE_HUBS and np.count_nonzero(mix) <= SPARSE_DENSITY * mix.size)


def mix_models(mix: np.ndarray, models: np.ndarray) -> np.ndarray:
    """Mix stacked hub models all at once: row d of the result is ``sum_j H[j, d] models[j]``.

    Parameters
    ----------
    mix : numpy.ndarray
        ``D x D`` mixing matrix H.
    models : numpy.ndarray
        ``D x n`` matrix, one flattened hub model per row.

    Returns
    -------
    numpy.ndarray
        ``H^T models`` (Jacobi: every hub uses the models of before the mixing);
        for a large sparse H (:func:`is_sparse`) from its nonzeros only, which
        costs in proportion to the graph's edges rather than ``D^2``.

    Examples
    --------
    >>> mix_models(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([[0.0], [2.0]])).tolist()
    [[1.0], [1.0]]
    >>> ring = np.roll(np.eye(600), 1, axis=1) / 2 + np.eye(600) / 2
    >>> models = np.arange(600.0)[:, None]
    >>> bool(np.allclose(mix_models(ring, models), ring.T @ models))
    True
    """
    mix = np.asarray(mix)
    if not is_sparse(mix):
        return mix.T @ models
    out = np.empty((mix.shape[1], *np.shape(models)[1:]), dtype=np.result_type(mix, models))
    for d in range(mix.shape[1]):
        sources = np.flatnonzero(mix[:, d])
        out[d] = mix[sources, d] @ models[sources]
    return out


def weighted_average(b: np.ndarray, models: np.ndarray) -> np.ndarray:
    """Return ``u = sum_d b_d y_d`` of stacked hub models (the evaluated model).

    Examples
    --------
    >>> weighted_average(np.array([0.25, 0.75]), np.array([[0.0], [4.0]])).tolist()
    [3.0]
    """
    return np.asarray(b) @ models


def consensus_distance(b: np.ndarray, models: np.ndarray) -> float:
    """Return ``sum_d b_d ||y_d - u||^2``: how far the hubs are from agreeing.

    Examples
    --------
    >>> consensus_distance(np.array([0.5, 0.5]), np.array([[0.0], [2.0]]))
    1.0
    """
    deviation = models - weighted_average(b, models)
    return float(np.asarray(b) @ (deviation**2).sum(axis=1))
