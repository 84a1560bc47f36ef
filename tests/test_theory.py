"""Theorem 1 quantities against hand-computed numbers and independent loop implementations."""

import json
import math

import networkx as nx
import numpy as np
import pytest

from flwr_multilevel import ConfigError, complete_mixing, metropolis_hastings, spectrum
from flwr_multilevel.model.hierarchy import build_hierarchy
from flwr_multilevel.model.theory import (
    STEP_SIZE_RATE_FLOOR,
    corollary1_holds,
    drift_factor,
    format_report,
    gamma_factor,
    largest_step_size,
    local_factor,
    mixing_checks,
    step_size_lhs,
    theorem1_bound,
    theory_report,
    workers_without_guarantee,
)

TWO_HUB_H = np.array([[0.75, 0.25], [0.25, 0.75]])
CONSTANTS = {"L": 1.0, "sigma2": 1.0, "beta": 0.0, "f_gap": 1.0}


# ---- independent reference implementations (loops and series, no closed forms) ----


def series_gamma(zeta, terms=4000):
    # zeta/(1-zeta^2) = sum zeta^(2k+1), 2/(1-zeta) = 2 sum zeta^k, zeta/(1-zeta)^2 = sum k zeta^k
    return sum(zeta ** (2 * k + 1) + 2 * zeta**k + k * zeta**k for k in range(terms))


def series_drift(zeta, terms=4000):
    # zeta^2/(1-zeta^2) = sum zeta^(2k+2), 2 zeta/(1-zeta) = 2 sum zeta^(k+1),
    # 1/(1-zeta)^2 = sum (k+1) zeta^k
    return sum(zeta ** (2 * k + 2) + 2 * zeta ** (k + 1) + (k + 1) * zeta**k for k in range(terms))


def condition_slack(a, p, zeta, tau, q, L, beta, eta):
    """Per-worker lhs - rhs of the step-size condition (>= 0 where it holds), by a loop."""
    gamma = series_gamma(zeta)
    slack = []
    for a_i, p_i in zip(a, p, strict=True):
        lhs = 4 * p_i - p_i * p_i - 2
        rhs = eta * L * (a_i * p_i * (beta + 1) - a_i * p_i * p_i + p_i * p_i)
        rhs += 8 * L * L * eta * eta * q * q * tau * tau * gamma
        slack.append(lhs - rhs)
    return slack


def bisect_step_size(a, p, zeta, tau, q, L, beta):
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if min(condition_slack(a, p, zeta, tau, q, L, beta, mid)) >= 0:
            lo = mid
        else:
            hi = mid
    return lo


def loop_bound(a, p, zeta, tau, q, K, eta, L, sigma2, f_gap):
    mean_rate = 0.0
    sum_a2_p = 0.0
    for a_i, p_i in zip(a, p, strict=True):
        mean_rate += a_i * p_i
        sum_a2_p += a_i * a_i * p_i
    drift = series_drift(zeta)
    local_sum = tau * tau * (q - 1) * (2 * q + 1) / 6 + (tau - 1) * (2 * tau + 1) / 6
    c = 4 * L * L * eta * eta * sigma2 * mean_rate
    return {
        "optimisation": 2 * f_gap / (eta * K),
        "variance": sigma2 * eta * L * sum_a2_p,
        "topology": c * (q * tau) ** 3 * (1 / (q * tau) - 1 / K) * drift,
        "local": c * (2 - zeta) / (1 - zeta) * local_sum,
        "topology_limit": c * (q * tau) ** 2 * drift,
    }


# ---- factors ----


def test_factors_by_hand_at_zeta_one_half():
    zeta = spectrum(TWO_HUB_H).zeta
    assert zeta == pytest.approx(0.5, abs=1e-12)  # eigenvalues 1 and 0.5
    # Gamma = 0.5/0.75 + 2/0.5 + 0.5/0.25 = 0.6667 + 4 + 2
    assert gamma_factor(zeta) == pytest.approx(6.666666666666667, rel=1e-12)
    # A = 0.25/0.75 + 1/0.5 + 1/0.25 = 0.3333 + 2 + 4
    assert drift_factor(zeta) == pytest.approx(6.333333333333333, rel=1e-12)
    # (2 - 0.5)/(1 - 0.5)
    assert local_factor(zeta) == pytest.approx(3.0, rel=1e-12)


def test_complete_mixing_gives_zeta_zero_and_unit_factors():
    b = np.array([0.1, 0.2, 0.3, 0.4])
    zeta = spectrum(complete_mixing(b)).zeta
    assert zeta == pytest.approx(0.0, abs=1e-12)
    assert drift_factor(zeta) == pytest.approx(1.0, abs=1e-10)
    assert gamma_factor(zeta) == pytest.approx(2.0, abs=1e-10)
    assert local_factor(zeta) == pytest.approx(2.0, abs=1e-10)


@pytest.mark.parametrize("zeta", [0.0, 0.1, 0.5, 0.9, 0.97])
def test_factors_match_geometric_series(zeta):
    assert gamma_factor(zeta) == pytest.approx(series_gamma(zeta), rel=1e-9)
    assert drift_factor(zeta) == pytest.approx(series_drift(zeta), rel=1e-9)


@pytest.mark.parametrize("zeta", [1.0, 1.5])
def test_factors_infinite_when_h_does_not_mix(zeta):
    assert gamma_factor(zeta) == math.inf
    assert drift_factor(zeta) == math.inf
    assert local_factor(zeta) == math.inf


def test_negative_zeta_rejected():
    with pytest.raises(ValueError, match="zeta"):
        gamma_factor(-0.1)


# ---- step-size condition ----


def test_rate_floor_and_lhs():
    assert STEP_SIZE_RATE_FLOOR == pytest.approx(0.5857864376, abs=1e-10)
    # 4p - p^2 - 2 at p = 1, 0.5, 0.8: 1, -0.25, 0.56
    np.testing.assert_allclose(step_size_lhs([1.0, 0.5, 0.8]), [1.0, -0.25, 0.56], atol=1e-12)
    assert step_size_lhs(STEP_SIZE_RATE_FLOOR) == pytest.approx(0.0, abs=1e-12)


def test_largest_step_size_by_hand():
    # p = 1, a = 0.5, beta = 0, L = 1, tau = q = 1, zeta = 0 (Gamma = 2):
    # lhs = 1, c = 0.5 - 0.5 + 1 = 1, d = 8 * 2 = 16: 16 eta^2 + eta - 1 = 0
    # eta = (-1 + sqrt(65)) / 32 = 0.22069555...
    eta = largest_step_size([0.5, 0.5], [1.0, 1.0], 0.0, 1, 1, 1.0, 0.0)
    assert eta == pytest.approx(0.2206955546, rel=1e-9)


@pytest.mark.parametrize(
    ("a", "p", "zeta", "tau", "q", "L", "beta"),
    [
        ([0.5, 0.5], [1.0, 1.0], 0.0, 1, 1, 1.0, 0.0),
        ([0.1, 0.2, 0.3, 0.4], [0.6, 0.9, 1.0, 0.7], 0.5, 4, 2, 2.5, 1.0),
        ([0.7, 0.3], [0.59, 1.0], 0.8, 2, 3, 0.3, 4.0),
        ([0.25] * 4, [0.8, 0.8, 0.8, 0.8], 0.95, 8, 1, 10.0, 0.5),
    ],
)
def test_largest_step_size_binds_exactly(a, p, zeta, tau, q, L, beta):
    eta = largest_step_size(a, p, zeta, tau, q, L, beta)
    assert eta > 0
    slack = condition_slack(a, p, zeta, tau, q, L, beta, eta)
    scale = max(abs(4 * x - x * x - 2) for x in p)
    assert min(slack) == pytest.approx(0.0, abs=1e-9 * scale)  # binding worker: equality
    assert all(s >= -1e-9 * scale for s in slack)  # everybody else: holds
    assert min(condition_slack(a, p, zeta, tau, q, L, beta, eta * (1 + 1e-6))) < 0
    assert eta == pytest.approx(bisect_step_size(a, p, zeta, tau, q, L, beta), rel=1e-9)


def test_slow_worker_voids_the_guarantee():
    a, p = [0.5, 0.5], [1.0, 0.55]
    assert largest_step_size(a, p, 0.0, 1, 1, 1.0, 0.0) == 0.0
    assert workers_without_guarantee(p) == [1]
    assert workers_without_guarantee([0.55, 0.9, 0.1, STEP_SIZE_RATE_FLOOR]) == [0, 2, 3]


def test_rate_just_above_floor_is_allowed():
    p = [STEP_SIZE_RATE_FLOOR + 1e-3, 1.0]
    assert workers_without_guarantee(p) == []
    eta = largest_step_size([0.5, 0.5], p, 0.0, 1, 1, 1.0, 0.0)
    # lhs = 4p - p^2 - 2 ~ 2.83e-3; 16 eta^2 + 0.466 eta = lhs gives eta ~ 5.2e-3
    assert 0 < eta < 1e-2
    assert eta < largest_step_size([0.5, 0.5], [1.0, 1.0], 0.0, 1, 1, 1.0, 0.0) / 10
    assert min(condition_slack([0.5, 0.5], p, 0.0, 1, 1, 1.0, 0.0, eta)) == pytest.approx(
        0.0, abs=1e-12
    )


def test_largest_step_size_zero_when_h_does_not_mix():
    assert largest_step_size([1.0], [1.0], 1.0, 1, 1, 1.0, 0.0) == 0.0


def test_corollary1():
    assert corollary1_holds(2, 2, 256)  # (q tau)^2 = 16 = sqrt(256)
    assert not corollary1_holds(2, 2, 255)
    assert not corollary1_holds(1, 1, 1)  # q tau = K
    assert corollary1_holds(1, 1, 2)
    assert corollary1_holds(4, 8, 32**4)


# ---- the bound ----


def test_bound_by_hand():
    # a = (0.5, 0.5), p = (1, 1): P = 1, sum a^2 p = 0.5; zeta = 0.5 (A = 19/3, (2-z)/(1-z) = 3)
    # tau = q = 2, K = 100, eta = 0.01, L = sigma2 = f_gap = 1; 4 L^2 eta^2 sigma2 P = 4e-4
    bound = theorem1_bound([0.5, 0.5], [1.0, 1.0], 0.5, 2, 2, 100, 0.01, 1.0, 1.0, 1.0)
    assert bound.optimisation == pytest.approx(2.0)  # 2 / (0.01 * 100)
    assert bound.variance == pytest.approx(0.005)  # 0.01 * 0.5
    assert bound.topology == pytest.approx(0.038912)  # 4e-4 * 64 * (1/4 - 1/100) * 19/3
    assert bound.local == pytest.approx(0.005)  # 4e-4 * 3 * (4*1*5/6 + 1*5/6)
    assert bound.total == pytest.approx(2.048912)
    assert bound.topology_limit == pytest.approx(0.04053333333)  # 4e-4 * 16 * 19/3
    assert bound.limit == pytest.approx(0.05053333333)


def test_bound_ignores_beta_and_grows_with_zeta():
    args = ([0.5, 0.5], [1.0, 1.0])
    low = theorem1_bound(*args, 0.1, 2, 2, 100, 0.01, 1.0, 1.0, 1.0)
    high = theorem1_bound(*args, 0.9, 2, 2, 100, 0.01, 1.0, 1.0, 1.0)
    assert high.topology > low.topology and high.local > low.local
    assert high.optimisation == low.optimisation and high.variance == low.variance


def test_bound_rejects_non_positive_step():
    with pytest.raises(ValueError, match="eta"):
        theorem1_bound([1.0], [1.0], 0.0, 1, 1, 10, 0.0, 1.0, 1.0, 1.0)


def three_hub_case():
    h = build_hierarchy([1, 2, 3], [1.0, 2.0, 1.0, 3.0, 1.0, 2.0], [0.9, 0.7, 1.0, 0.6, 0.8, 0.95])
    graph = nx.path_graph(3)
    mix = metropolis_hastings(graph, h.b)
    return h, graph, mix


def test_three_hub_case_against_loops():
    h, graph, mix = three_hub_case()
    b = h.b
    # b = (1, 3, 6) / 10: unequal
    np.testing.assert_allclose(b, [0.1, 0.3, 0.6], atol=1e-12)
    sym = np.diag(b**-0.5) @ mix @ np.diag(b**0.5)
    eig = np.sort(np.linalg.eigvalsh((sym + sym.T) / 2))
    zeta = max(abs(eig[0]), abs(eig[1]))
    assert spectrum(mix).zeta == pytest.approx(zeta, abs=1e-12)
    assert 0 < zeta < 1
    a, p = h.a, h.rates
    tau, q, K, L, beta = 3, 2, 1000, 2.0, 0.5
    eta = largest_step_size(a, p, zeta, tau, q, L, beta)
    assert eta == pytest.approx(bisect_step_size(a, p, zeta, tau, q, L, beta), rel=1e-9)
    got = theorem1_bound(a, p, zeta, tau, q, K, eta, L, 0.3, 5.0)
    want = loop_bound(a, p, zeta, tau, q, K, eta, L, 0.3, 5.0)
    for name, value in want.items():
        assert getattr(got, name) == pytest.approx(value, rel=1e-9), name

    report = theory_report(h, mix, graph, tau=tau, q=q, time_steps=K, lr=eta / 2, L=L,
                           sigma2=0.3, beta=beta, f_gap=5.0)  # fmt: skip
    assert report["zeta"] == pytest.approx(zeta, abs=1e-12)
    assert report["largest_step_size"] == pytest.approx(eta)
    assert report["lr_satisfies_step_size"] is True
    at_lr = loop_bound(a, p, zeta, tau, q, K, eta / 2, L, 0.3, 5.0)
    assert report["bound"]["total"] == pytest.approx(sum(at_lr[k] for k in list(at_lr)[:4]))
    assert report["P"] == pytest.approx(sum(x * y for x, y in zip(a, p, strict=True)))


# ---- Assumption 2 checks ----


def test_mixing_checks_pass_for_metropolis():
    h, graph, mix = three_hub_case()
    checks = mixing_checks(mix, graph, h.b)
    assert checks["ok"] is True
    assert checks["support"] is True and checks["nonnegative"] is True
    assert checks["column_sums"] < 1e-12 and checks["stationary"] < 1e-12
    assert checks["detailed_balance"] < 1e-12


def test_mixing_checks_flag_row_stochastic_matrix():
    mix = np.array([[0.75, 0.25], [0.5, 0.5]])  # rows sum to 1, columns to 1.25 and 0.75
    checks = mixing_checks(mix, nx.path_graph(2), np.array([0.5, 0.5]))
    assert checks["column_sums"] == pytest.approx(0.25)
    assert checks["ok"] is False


def test_mixing_checks_flag_b_not_stationary():
    b = np.array([0.25, 0.75])  # H doubly stochastic, but H b = (0.375, 0.625)
    checks = mixing_checks(TWO_HUB_H, nx.path_graph(2), b)
    assert checks["column_sums"] == pytest.approx(0.0, abs=1e-15)
    assert checks["stationary"] == pytest.approx(0.125)
    assert checks["detailed_balance"] == pytest.approx(0.125)  # |0.25*0.75 - 0.25*0.25|
    assert checks["support"] is True
    assert checks["ok"] is False


def test_mixing_checks_flag_support_mismatch():
    b = np.ones(3) / 3
    checks = mixing_checks(complete_mixing(b), nx.path_graph(3), b)  # H[0, 2] > 0, no edge
    assert checks["support"] is False and checks["ok"] is False
    assert checks["column_sums"] < 1e-12 and checks["stationary"] < 1e-12
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # zero diagonal
    checks = mixing_checks(swap, nx.path_graph(2), np.array([0.5, 0.5]))
    assert checks["support"] is False and checks["ok"] is False
    missing_edge = np.eye(2)  # edge (0, 1) but H[0, 1] = 0
    assert mixing_checks(missing_edge, nx.path_graph(2), np.array([0.5, 0.5]))["support"] is False


def test_mixing_checks_flag_negative_entries():
    mix = np.array([[1.1, -0.1], [-0.1, 1.1]])
    checks = mixing_checks(mix, nx.path_graph(2), np.array([0.5, 0.5]))
    assert checks["nonnegative"] is False and checks["ok"] is False


def test_mixing_checks_wrong_shape():
    with pytest.raises(ConfigError, match="hubs.mixing"):
        mixing_checks(np.eye(3), nx.path_graph(2), np.array([0.5, 0.5]))


# ---- report ----


def assert_plain(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


def path_report(**constants):
    h = build_hierarchy([2, 2, 2], [1.0, 1.0, 2.0, 1.0, 1.0, 1.0], [1.0, 0.55, 0.8, 0.9, 0.5, 1.0])
    graph = nx.path_graph(3)
    mix = metropolis_hastings(graph, h.b)
    return theory_report(h, mix, graph, tau=4, q=2, time_steps=4096, lr=0.01, **constants)


def test_report_without_constants():
    report = path_report()
    assert_plain(report)
    json.dumps(report, allow_nan=False)
    assert report["bound"] is None and report["largest_step_size"] is None
    assert report["constants_missing"] == [
        "theory.L",
        "theory.sigma2",
        "theory.beta",
        "theory.f_gap",
    ]
    assert report["workers_without_guarantee"] == [1, 4]
    assert report["mixing_checks"]["ok"] is True
    assert report["corollary1"] is True  # 64 <= sqrt(4096) = 64
    assert report["b"] == pytest.approx([2 / 7, 3 / 7, 2 / 7])  # hub weight totals 2, 3, 2
    text = format_report(report)
    assert "theory.L=... theory.sigma2=... theory.beta=... theory.f_gap=..." in text
    assert "2 of 6 workers" in text and "workers 1, 4" in text


def test_report_partial_constants_name_the_missing():
    report = path_report(L=1.0, beta=0.0)
    assert report["bound"] is None
    assert report["constants_missing"] == ["theory.sigma2", "theory.f_gap"]
    assert "theory.sigma2=... theory.f_gap=..." in format_report(report)


def test_report_with_constants():
    report = path_report(**CONSTANTS)
    json.dumps(report, allow_nan=False)
    assert_plain(report)
    assert report["constants_missing"] == []
    assert report["largest_step_size"] == 0.0  # slow workers: no eta works
    assert report["lr_satisfies_step_size"] is False
    assert set(report["bound"]) >= {"optimisation", "variance", "topology", "local", "total"}
    assert report["bound"]["optimisation"] == pytest.approx(2 / (0.01 * 4096))
    text = format_report(report)
    assert "NO, the bound does not apply" in text and "K -> infinity" in text


def test_report_one_hub_is_strict_json():
    h = build_hierarchy([3], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    report = theory_report(h, np.ones((1, 1)), nx.path_graph(1), tau=2, q=1, time_steps=100,
                           lr=0.01, **CONSTANTS)  # fmt: skip
    json.dumps(report, allow_nan=False)
    assert report["lambda_2"] is None and report["zeta"] == 0.0
    assert report["lr_satisfies_step_size"] is True
    assert "n/a" in format_report(report)


@pytest.mark.parametrize(
    ("name", "value", "relation"),
    [
        ("L", 0.0, "> 0"),
        ("L", -1.0, "> 0"),
        ("L", "big", "> 0"),
        ("L", True, "> 0"),
        ("sigma2", -0.5, ">= 0"),
        ("beta", -1e-3, ">= 0"),
        ("f_gap", float("nan"), ">= 0"),
        ("f_gap", float("inf"), ">= 0"),
    ],
)
def test_bad_constants_raise(name, value, relation):
    constants = dict(CONSTANTS, **{name: value})
    with pytest.raises(ConfigError) as err:
        path_report(**constants)
    assert str(err.value).startswith(f"theory.{name}: expected a number {relation}, got ")
    assert err.value.key == f"theory.{name}"


def test_zero_constants_allowed_where_documented():
    report = path_report(L=1.0, sigma2=0.0, beta=0.0, f_gap=0.0)
    assert report["bound"]["total"] == 0.0
