"""H constructions and checks against numpy on random connected graphs and random b."""

import networkx as nx
import numpy as np
import pytest

from flwr_multilevel import (
    ConfigError,
    check_mixing,
    hub_graph,
    metropolis_hastings,
    mixing_matrix,
    spectrum,
)
from flwr_multilevel.model.hierarchy import build_hierarchy


def random_case(seed):
    rng = np.random.default_rng(seed)
    num_hubs = int(rng.integers(2, 12))
    graph = hub_graph("erdos_renyi", num_hubs, p=float(rng.uniform(0.2, 0.9)), seed=seed)
    b = rng.uniform(0.05, 1.0, num_hubs)
    return graph, b / b.sum()


@pytest.mark.parametrize("seed", range(25))
def test_metropolis_hastings_properties(seed):
    graph, b = random_case(seed)
    mix = metropolis_hastings(graph, b)
    n = len(b)
    np.testing.assert_allclose(mix.sum(axis=0), np.ones(n), atol=1e-12)  # 1^T H = 1^T
    np.testing.assert_allclose(mix @ b, b, atol=1e-12)  # H b = b
    np.testing.assert_allclose(mix * b, (mix * b).T, atol=1e-12)  # H diag(b) symmetric
    for i in range(n):
        for j in range(n):
            assert (mix[i, j] > 0) == (i == j or graph.has_edge(i, j))
    check_mixing(mix, graph, b)


@pytest.mark.parametrize("seed", range(25))
def test_zeta_against_numpy(seed):
    graph, b = random_case(seed)
    mix = mixing_matrix(graph, b, "metropolis")
    # similar to a symmetric matrix, so the spectrum is real
    sym = np.diag(b**-0.5) @ mix @ np.diag(b**0.5)
    eig = np.sort(np.linalg.eigvalsh((sym + sym.T) / 2))[::-1]
    assert eig[0] == pytest.approx(1.0, abs=1e-9)
    s = spectrum(mix)
    assert s.zeta == pytest.approx(max(abs(eig[1]), abs(eig[-1])), abs=1e-9)
    assert s.lambda_2 == pytest.approx(eig[1], abs=1e-9)
    assert s.lambda_d == pytest.approx(eig[-1], abs=1e-9)
    assert s.gap == pytest.approx(1 - s.zeta)
    assert s.zeta < 1.0  # connected with self-loops: mixes


def test_complete_graph_gives_b_one_transpose_and_zero_zeta():
    b = np.array([0.1, 0.2, 0.3, 0.4])
    mix = mixing_matrix(nx.complete_graph(4), b)
    np.testing.assert_allclose(mix, np.outer(b, np.ones(4)))
    assert spectrum(mix).zeta == pytest.approx(0.0, abs=1e-12)


def test_known_path_value():
    # uniform b on a 5-path: zeta 0.873 in paper.md 2.5
    assert spectrum(mixing_matrix(nx.path_graph(5), np.ones(5) / 5)).zeta == pytest.approx(
        0.873, abs=1e-3
    )


def test_weights_v_a_b_by_hand():
    h = build_hierarchy([2, 1], [1.0, 3.0, 4.0], [1.0, 0.5, 0.25])
    np.testing.assert_allclose(h.v, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(h.a, [0.125, 0.375, 0.5])
    np.testing.assert_allclose(h.b, [0.5, 0.5])
    assert h.mean_rate == pytest.approx(0.125 + 0.1875 + 0.125)
    assert h.rate_variance_term == pytest.approx(0.125**2 + 0.375**2 * 0.5 + 0.25 * 0.25)


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        (np.eye(3), "H[0, 1] > 0 on hub-graph edge"),
        (np.array([[0.5, 0.5, 0.5], [0.5, 0.0, 0.0], [0.0, 0.5, 0.5]]), "H[0, 2] = 0"),
        (np.array([[0.6, 0.3, 0.0], [0.3, 0.3, 0.5], [0.0, 0.3, 0.5]]), "sum to 1"),
        (np.array([[0.5, 0.2, 0.0], [0.5, 0.3, 0.5], [0.0, 0.5, 0.5]]), "H b = b"),
        (np.ones((2, 2)), "3x3"),
    ],
)
def test_check_mixing_rejects(matrix, expected):
    with pytest.raises(ConfigError, match="hubs.mixing") as err:
        check_mixing(matrix, nx.path_graph(3), np.ones(3) / 3)
    assert expected in str(err.value)
