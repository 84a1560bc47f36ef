"""The engine against an independent single-loop Algorithm 1, and the special cases."""

import networkx as nx
import numpy as np
from flwr.app import ConfigRecord
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.prepare import initial_model, train_config

from .helpers import flat, run_engine
from .reference import algorithm_1, logreg_gradient


def metropolis_by_hand(graph, b):
    """H[i, j] = min(1/(deg_j+1), (b_i/b_j)/(deg_i+1)) on edges, diagonal = rest of column."""
    n = len(b)
    mix = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and graph.has_edge(i, j):
                mix[i, j] = min(1 / (graph.degree(j) + 1), b[i] / b[j] / (graph.degree(i) + 1))
    for j in range(n):
        mix[j, j] = 1 - mix[:, j].sum()
    return mix


def reference_models(exp):
    cfg, h = exp.cfg, exp.hierarchy
    data = exp.dataset
    x = data.x_train.flatten(1).double().numpy()
    y = data.y_train.numpy()
    init = initial_model(exp)
    b = np.array([h.weights[h.hub_of == d].sum() for d in range(h.num_hubs)]) / h.weights.sum()
    mixing = (
        metropolis_by_hand(nx.path_graph(h.num_hubs), b) if cfg.hubs.graph == "path" else exp.mixing
    )
    return algorithm_1(
        x_parts=[x[p] for p in exp.partitions],
        y_parts=[y[p] for p in exp.partitions],
        hub_of=h.hub_of,
        weights=h.weights,
        rates=h.rates,
        mixing=mixing,
        w0=init["linear.weight"].numpy().astype(np.float64),
        b0=init["linear.bias"].numpy().astype(np.float64),
        tau=cfg.tau,
        q=cfg.q,
        rounds=cfg.rounds,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )


def test_engine_matches_independent_algorithm_1(config):
    cfg = config(
        "hubs.workers=[2,3,4]",
        "hubs.graph=path",
        "data.partition=unequal",
        "weighting=data_size",
        "rates.distribution=explicit",
        "rates.values=[1.0,0.3,0.7,0.5,1.0,0.2,0.9,0.6,0.4]",
        "tau=3",
        "q=2",
        "rounds=6",
        "lr=0.5",
        "batch_size=8",
        "seed=3",
    )
    exp, hubs = run_engine(cfg)
    assert len(set(exp.hierarchy.weights)) > 1  # unequal weights really in play
    expected = reference_models(exp)
    assert len(hubs) == 3
    for (w, b), model in zip(expected, hubs, strict=False):
        np.testing.assert_allclose(model[0], w, atol=1e-6, rtol=0)
        np.testing.assert_allclose(model[1], b, atol=1e-6, rtol=0)
    # and the hubs really differ (gossip on a path does not reach consensus)
    assert np.abs(flat(hubs[0]) - flat(hubs[2])).max() > 1e-4


def test_one_hub_equals_stock_flower_fedavg(config):
    cfg = config(
        "hubs.count=1",
        "hubs.workers=4",
        "rates.distribution=fixed",
        "rates.p=1.0",
        "data.partition=unequal",
        "weighting=data_size",
        "tau=3",
        "q=1",
        "rounds=4",
    )
    exp, hubs = run_engine(cfg)
    stock = FedAvg(fraction_evaluate=0.0, min_available_nodes=4, min_train_nodes=4)
    result = stock.start(
        grid=LocalGrid(client_app, 4),
        initial_arrays=initial_model(exp),
        num_rounds=cfg.rounds,
        train_config=ConfigRecord({**train_config(exp), "time-steps": cfg.tau}),
    )
    np.testing.assert_allclose(
        flat(hubs[0]), flat([a.numpy() for a in result.arrays.values()]), atol=1e-6, rtol=0
    )


def test_complete_graph_makes_hubs_equal_after_each_gossip(config):
    cfg = config(
        "hubs.count=4",
        "hubs.workers=[1,2,3,2]",
        "hubs.graph=complete",
        "tau=2",
        "q=2",
        "rounds=6",
        "data.partition=unequal",
    )
    spreads = {}

    def on_round(report, models):
        rows = np.stack([flat([a.numpy() for a in m.values()]) for m in models])
        spreads[report.server_round] = np.abs(rows - rows[0]).max()

    run_engine(cfg, on_round=on_round)
    assert all(spreads[r] == 0.0 for r in (2, 4, 6))
    assert all(spreads[r] > 0.0 for r in (1, 3, 5))


def test_tau_q_one_with_full_rates_is_synchronous_sgd(config):
    cfg = config(
        "hubs.count=2",
        "hubs.workers=3",
        "hubs.graph=complete",
        "tau=1",
        "q=1",
        "rounds=5",
        "rates.distribution=fixed",
        "rates.p=1.0",
        "data.partition=unequal",
        "weighting=data_size",
        "batch_size=16",
    )
    exp, hubs = run_engine(cfg)
    h, data = exp.hierarchy, exp.dataset
    x = data.x_train.flatten(1).double().numpy()
    y = data.y_train.numpy()
    init = initial_model(exp)
    w, b = init["linear.weight"].numpy().astype(float), init["linear.bias"].numpy().astype(float)
    from flwr_multilevel.clients import step_schedule

    for r in range(1, cfg.rounds + 1):  # x <- x - lr * sum_i a_i g_i(x): one global SGD step
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for i, part in enumerate(exp.partitions):
            batch = step_schedule(cfg.seed, r, i, 1, 1.0, len(part), cfg.batch_size).batches[0]
            dw, db = logreg_gradient(w, b, x[part][batch], y[part][batch], 10)
            gw, gb = gw + h.a[i] * dw, gb + h.a[i] * db
        w, b = w - cfg.lr * gw, b - cfg.lr * gb
    for model in hubs:
        np.testing.assert_allclose(model[0], w, atol=1e-6, rtol=0)
        np.testing.assert_allclose(model[1], b, atol=1e-6, rtol=0)


def test_equal_weights_on_unequal_data_match_algorithm_1_through_a_dp_chain(config):
    """weighting=equal with unequal data: v_i != num-examples share. Plain FedAvg and a
    no-noise, huge-clip DP chain must both average with v_i, as the reference does."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    cfg = config(
        "hubs.workers=[2,3,2]",
        "data.partition=unequal",
        "weighting=equal",
        "rates.distribution=fixed",  # Flower's DP clipping cannot take a zero update
        "tau=3",
        "q=2",
        "rounds=4",
        "batch_size=8",
        "seed=5",
    )
    dp = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 0.0, 1e9, num_sampled_clients=3)
    for strategy in (FedAvg(), dp):
        exp, hubs = run_engine(cfg, strategy=strategy)
        sizes = [len(p) for p in exp.partitions]
        assert len(set(sizes)) > 1 and set(exp.hierarchy.weights) == {1.0}
        for (w, b), model in zip(reference_models(exp), hubs, strict=True):
            np.testing.assert_allclose(model[0], w, atol=1e-6, rtol=0)
            np.testing.assert_allclose(model[1], b, atol=1e-6, rtol=0)
