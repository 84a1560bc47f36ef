"""Hub graphs: which hubs gossip with which.

Every function returns a connected, undirected :class:`networkx.Graph` on the
nodes ``0..D-1`` or raises :class:`~flwr_multilevel.errors.ConfigError`.
"""

import math
from pathlib import Path

import networkx as nx
import numpy as np

from flwr_multilevel.errors import ConfigError

GRAPHS = ("complete", "ring", "path", "star", "erdos_renyi")
MAX_FILE_BYTES = 1_000_000


def read_number_rows(path: str | Path, key: str, what: str) -> list[list[float]]:
    r"""Return the rows of numbers of a small text file (``#`` comments, commas or spaces).

    Errors never quote the file's contents.

    Raises
    ------
    ConfigError
        ``key``: missing, unreadable, large, binary or non-numeric file.

    Examples
    --------
    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    >>> _ = f.write("0 1  # an edge\n1,2\n"); f.close()
    >>> read_number_rows(f.name, "hubs.graph", "a graph file")
    [[0.0, 1.0], [1.0, 2.0]]
    >>> os.unlink(f.name)
    """
    file = Path(path)
    try:
        if not file.is_file():
            raise ConfigError(key, f"expected {what}, got {str(path)[:200]!r}")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(key, f"{file}: expected a text file under {MAX_FILE_BYTES} bytes")
        text = file.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(key, f"{file} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{file} is not a text file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        try:
            rows.append([float(x) for x in line.split()])
        except ValueError:
            raise ConfigError(key, f"{file}: line {number} expected numbers only") from None
    if not rows:
        raise ConfigError(key, f"{file}: expected rows of numbers, the file has none")
    return rows


def check_hub_graph(graph: nx.Graph, num_hubs: int, key: str = "hubs.graph") -> nx.Graph:
    """Check that ``graph`` is a connected undirected graph on ``0..num_hubs-1``.

    Parameters
    ----------
    graph : networkx.Graph
        Candidate hub graph. Self-loops are ignored (every hub keeps part of
        its own model anyway).
    num_hubs : int
        Number of hubs D.
    key : str (default: "hubs.graph")
        Config key named in errors.

    Returns
    -------
    networkx.Graph
        A copy without self-loops.

    Raises
    ------
    ConfigError
        Directed graph, wrong node labels, or a disconnected graph.

    Examples
    --------
    >>> check_hub_graph(nx.path_graph(3), 3).number_of_edges()
    2
    """
    if not isinstance(graph, nx.Graph) or graph.is_directed():
        raise ConfigError(key, "expected an undirected networkx graph")
    if set(graph.nodes) != set(range(num_hubs)):
        raise ConfigError(
            key, f"expected nodes 0..{num_hubs - 1} (one per hub), got {sorted(graph.nodes)}"
        )
    if not nx.is_connected(graph):
        parts = [sorted(c) for c in nx.connected_components(graph)]
        raise ConfigError(key, f"expected a connected hub graph, got components {parts}")
    clean = nx.Graph(graph)
    clean.remove_edges_from(nx.selfloop_edges(clean))
    return clean


def load_graph_file(path: str | Path, num_hubs: int) -> nx.Graph:
    r"""Read a hub graph from an adjacency matrix or an edge-list file.

    A file whose rows all hold ``num_hubs`` numbers is read as a 0/1 (or
    weighted: non-zero means an edge) adjacency matrix; otherwise each
    non-empty line ``u v`` is an edge. ``#`` starts a comment.

    Returns
    -------
    networkx.Graph
        The connected hub graph.

    Raises
    ------
    ConfigError
        Missing or unreadable file, a non-symmetric matrix, bad labels, or a
        disconnected graph.

    Examples
    --------
    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    >>> _ = f.write("0 1\n1 2\n"); f.close()
    >>> sorted(load_graph_file(f.name, 3).edges)
    [(0, 1), (1, 2)]
    >>> os.unlink(f.name)
    """
    file = Path(path)
    values = read_number_rows(path, "hubs.graph", "a graph name or an existing file")
    if not all(math.isfinite(x) for row in values for x in row):
        raise ConfigError("hubs.graph", f"{file}: expected finite numbers")
    if len(values) == num_hubs and all(len(r) == num_hubs for r in values):
        adjacency = np.array(values)
        if (adjacency < 0).any():
            raise ConfigError("hubs.graph", f"{file}: expected adjacency entries >= 0")
        if not np.allclose(adjacency, adjacency.T):
            raise ConfigError("hubs.graph", f"{file}: expected a symmetric adjacency matrix")
        graph = nx.from_numpy_array((adjacency != 0).astype(int))
    elif all(len(r) == 2 for r in values):
        graph = nx.Graph()
        graph.add_nodes_from(range(num_hubs))
        for u, v in values:
            if not (u.is_integer() and v.is_integer() and 0 <= u < num_hubs and 0 <= v < num_hubs):
                raise ConfigError(
                    "hubs.graph", f"{file}: expected hub ids 0..{num_hubs - 1}, got {u:g} {v:g}"
                )
            graph.add_edge(int(u), int(v))
    else:
        raise ConfigError(
            "hubs.graph",
            f"{file}: expected a {num_hubs}x{num_hubs} adjacency matrix or 'u v' edge lines",
        )
    return check_hub_graph(graph, num_hubs)


def hub_graph(kind: str | nx.Graph, num_hubs: int, *, p: float = 0.5, seed: int = 0) -> nx.Graph:
    """Build the hub graph.

    Parameters
    ----------
    kind : str | networkx.Graph
        ``complete``, ``ring``, ``path``, ``star``, ``erdos_renyi``, a path to
        an adjacency-matrix or edge-list file, or a networkx graph.
    num_hubs : int
        Number of hubs D.
    p : float (default: 0.5)
        Edge probability of ``erdos_renyi``.
    seed : int (default: 0)
        Seed of ``erdos_renyi``; the first connected draw of the seeds
        ``seed, seed + 1, ...`` (at most 1000) is taken.

    Returns
    -------
    networkx.Graph
        A connected graph on ``0..D-1``. A single hub gives a one-node graph.

    Raises
    ------
    ConfigError
        Unknown name, a ring of fewer than 3 hubs, ``p`` outside (0, 1], no
        connected Erdos-Renyi draw, or an invalid file or graph.

    Examples
    --------
    >>> sorted(hub_graph("ring", 4).edges)
    [(0, 1), (0, 3), (1, 2), (2, 3)]
    """
    if isinstance(kind, nx.Graph):
        return check_hub_graph(kind, num_hubs)
    if kind == "complete":
        return nx.complete_graph(num_hubs)
    if kind == "path":
        return nx.path_graph(num_hubs)
    if kind == "star":
        return nx.star_graph(num_hubs - 1) if num_hubs > 1 else nx.empty_graph(1)
    if kind == "ring":
        if num_hubs < 3:
            raise ConfigError("hubs.graph", f"expected at least 3 hubs for a ring, got {num_hubs}")
        return nx.cycle_graph(num_hubs)
    if kind == "erdos_renyi":
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ConfigError("hubs.edge_probability", f"expected a number in (0, 1], got {p!r}")
        for attempt in range(1000):
            graph = nx.erdos_renyi_graph(num_hubs, p, seed=seed + attempt)
            if nx.is_connected(graph):
                return graph
        raise ConfigError(
            "hubs.edge_probability",
            f"no connected Erdos-Renyi graph on {num_hubs} hubs in 1000 draws at p={p}",
        )
    if isinstance(kind, str) and (Path(kind).suffix or "/" in kind):
        return load_graph_file(kind, num_hubs)
    raise ConfigError(
        "hubs.graph",
        f"expected one of {', '.join(GRAPHS)} or a graph file, got {kind!r}",
    )
