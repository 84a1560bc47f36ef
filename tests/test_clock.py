"""The virtual clock against a direct slot-by-slot simulation, and the wait-for-slowest engine."""

import numpy as np
import pytest

from flwr_multilevel.clients.worker import step_schedule
from flwr_multilevel.model.clock import round_slots, slots_to_finish
from flwr_multilevel.model.rates import COIN_STREAM

from .helpers import run_engine


def direct_slots(seed, server_round, worker, tau, rate):
    """Flip the worker's coins one slot at a time until its tau-th success."""
    rng = np.random.default_rng([seed, server_round, worker, COIN_STREAM])
    slot = done = 0
    while done < tau:
        slot += 1
        done += int(rng.random() < rate)
    return slot


@pytest.mark.parametrize("rate", [1.0, 0.9, 0.6, 0.25, 0.05])
@pytest.mark.parametrize("tau", [1, 4, 32])
def test_slots_match_direct_simulation(tau, rate):
    for server_round in range(1, 6):
        for worker in range(4):
            expected = direct_slots(3, server_round, worker, tau, rate)
            assert slots_to_finish(3, server_round, worker, tau, rate) == expected


def test_full_rate_needs_exactly_tau_slots():
    assert all(slots_to_finish(0, r, w, 7, 1.0) == 7 for r in range(1, 4) for w in range(5))


def test_slots_equal_tau_exactly_when_every_mll_coin_succeeds():
    """The first tau coins are the MLL-SGD steps: all taken <=> the waiting worker needs tau."""
    tau, rate = 4, 0.8
    for server_round in range(1, 30):
        coins = step_schedule(1, server_round, 2, tau, rate, 100, 8).coins
        assert (slots_to_finish(1, server_round, 2, tau, rate) == tau) == bool(coins.all())


def test_mean_slots_is_negative_binomial_mean():
    tau, rate = 8, 0.6
    draws = [slots_to_finish(0, r, 0, tau, rate) for r in range(1, 3001)]
    assert np.mean(draws) == pytest.approx(tau / rate, rel=0.03)
    assert min(draws) >= tau


def test_round_lasts_until_the_slowest_worker():
    rates = [1.0, 0.9, 0.6, 0.3]
    for server_round in range(1, 10):
        slowest = max(direct_slots(5, server_round, w, 4, p) for w, p in enumerate(rates))
        assert round_slots(5, server_round, rates, 4, wait_for_slowest=True) == slowest
        assert round_slots(5, server_round, rates, 4, wait_for_slowest=False) == 4


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_rate_is_rejected(bad):
    with pytest.raises(ValueError, match="rate"):
        slots_to_finish(0, 1, 0, 4, bad)


def test_engine_wait_mode_takes_tau_steps_and_advances_by_slowest(config):
    cfg = config(
        "hubs.count=2", "hubs.workers=3", "rounds=4", "tau=3", "q=2", "wait_for_slowest=true",
        "rates.distribution=uniform", "rates.low=0.3", "rates.high=0.9",
    )  # fmt: skip
    reports = []
    exp, _ = run_engine(cfg, on_round=lambda report, models: reports.append(report))
    rates = exp.hierarchy.rates
    for report in reports:
        assert report.steps == {i: cfg.tau for i in range(exp.hierarchy.num_workers)}
        expected = max(
            direct_slots(cfg.seed, report.server_round, w, cfg.tau, p) for w, p in enumerate(rates)
        )
        assert report.slots == expected > cfg.tau


def test_engine_mll_mode_rounds_last_tau_slots(config):
    cfg = config("hubs.count=2", "hubs.workers=2", "rounds=3", "tau=3", "rates.low=0.3")
    reports = []
    run_engine(cfg, on_round=lambda report, models: reports.append(report))
    assert [r.slots for r in reports] == [3, 3, 3]
    assert any(sum(r.steps.values()) < 3 * 4 for r in reports)
