"""time_steps: one round is tau coins however the app loops; steps_taken counts them (issue 18)."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, MetricRecordValues, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel.clients import multilevel_mod, steps_taken, time_steps
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.model.rates import coin_flips
from flwr_multilevel.strategies import MLLSGD

BATCHES = list(range(5))  # a "loader" of 5 batches
TAU, RATES, SEED = 8, [1.0, 0.5, 0.7], 3


def looping_app(loop, seen):
    """A ClientApp whose train function loops over time_steps as ``loop`` does."""
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        worker = int(context.node_config["partition-id"])
        seen[worker] = loop()
        metrics: dict[str, MetricRecordValues] = {
            "num-examples": 10,
            "my_steps": steps_taken(otherwise=-1),
        }
        content = RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord(metrics)})
        return Message(content, reply_to=msg)

    return app


def epochs(count):
    return lambda: [b for _ in range(count) for b in time_steps(BATCHES)]


def nested():
    out = []
    for outer in time_steps(BATCHES):
        out.append(outer)
        out.extend(time_steps(BATCHES))  # continues the round's coins and the loader
    return out


def stops_early():
    first = []
    for batch in time_steps(BATCHES):
        first.append(batch)
        break
    return first + list(time_steps(BATCHES))


def run_round(loop, server_round=1):
    seen: dict[int, list] = {}
    strategy = MLLSGD(FedAvg(), hubs=[3], tau=TAU, rates=RATES, seed=SEED, evaluate_every=0)
    arrays = ArrayRecord([np.zeros(2, dtype=np.float32)])
    result = strategy.start(LocalGrid(looping_app(loop, seen), 3), arrays, num_rounds=server_round)
    return seen, strategy, result


def coins(worker, server_round=1):
    return int(coin_flips(SEED, server_round, worker, TAU, RATES[worker]).sum())


@pytest.mark.parametrize("loop", [epochs(1), epochs(2), epochs(3), nested, stops_early])
def test_a_round_takes_exactly_its_coin_flipped_steps_however_the_app_loops(loop):
    seen, strategy, result = run_round(loop)
    expected = {w: coins(w) for w in range(3)}
    assert strategy.report.steps == expected and not strategy.report.dropped
    assert result.train_metrics_clientapp[1]["worker-steps"] == [expected[w] for w in range(3)]
    for worker, batches in seen.items():  # the loader's batches in order, restarting when done
        assert batches == [BATCHES[i % len(BATCHES)] for i in range(expected[worker])]


def test_steps_taken_is_the_rounds_count_inside_mll_sgd_and_the_apps_own_outside():
    _, strategy, result = run_round(epochs(2))
    hub = result.train_metrics_clientapp[1]
    assert hub["hub0-my_steps"] == pytest.approx(sum(coins(w) for w in range(3)) / 3)
    assert steps_taken(otherwise=7) == 7
    assert list(time_steps(BATCHES)) == BATCHES  # no MLL-SGD round: one epoch


def test_an_empty_loader_is_one_error_reply():
    _, strategy, _ = run_round(lambda: list(time_steps([])))
    assert strategy.report.steps == {} and len(strategy.report.dropped) == 3
    assert "the data loader yielded no batch" in strategy.report.dropped[0]


def test_every_round_flips_its_own_coins():
    # round 2's draws are coin_flips(seed, 2, worker), whatever round 1 took
    _, strategy, _ = run_round(epochs(2), server_round=2)
    assert strategy.report.steps == {w: coins(w, 2) for w in range(3)}
