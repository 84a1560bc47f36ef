"""One run-config vocabulary: default.yaml's keys, flattened, wherever a run config is read.

This repository's own Flower App (``[tool.flwr.app.config]``), ``MLLSGD.from_run_config``
(the table in ``strategies/app_config.py``), the Flower-form baseline and the quickstart
example read the same keys with the same meaning (issue 15).
"""

from pathlib import Path

import numpy as np
import pytest
import tomllib

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import default_config, to_run_config, validate
from flwr_multilevel.experiment.config import from_run_config as engine_config
from flwr_multilevel.experiment.prepare import build_mllsgd, prepare
from flwr_multilevel.model.hierarchy import hub_sizes
from flwr_multilevel.model.rates import operating_rates
from flwr_multilevel.strategies import MLLSGD
from flwr_multilevel.strategies.app_config import RUN_CONFIG_KEYS, mllsgd_arguments
from flwr_multilevel.strategies.settings import worker_rates

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_KEYS = set(to_run_config(default_config()))


def app_keys(folder: Path) -> set[str]:
    with (folder / "pyproject.toml").open("rb") as file:
        config = tomllib.load(file)["tool"]["flwr"]["app"]["config"]
    return set(config)


def test_the_three_key_sets_are_default_yamls():
    assert app_keys(ROOT) == DEFAULT_KEYS  # this repository's own app: every key
    assert set(RUN_CONFIG_KEYS) <= DEFAULT_KEYS  # what MLLSGD.from_run_config reads
    assert app_keys(ROOT / "baselines" / "mll_sgd") <= DEFAULT_KEYS  # the Flower-form baseline
    examples = ROOT / "examples"
    added = app_keys(examples / "quickstart_multilevel") - app_keys(examples / "quickstart_pytorch")
    assert added and added <= set(RUN_CONFIG_KEYS)  # the adoption adds only MLL-SGD's keys


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # default.yaml itself: 3 hubs of 4 on a path, uniform rates
        {"hubs.count": 2, "hubs.workers": "3,5", "hubs.graph": "complete", "weighting": "equal"},
        {"rates.distribution": "two_level", "rates.slow_fraction": 0.25, "seed": 7, "q": 1},
        {"rates.distribution": "explicit", "rates.values": "0.8", "wait_for_slowest": True},
        {"hubs.count": 5, "hubs.graph": "erdos_renyi", "hubs.edge_probability": 0.6, "seed": 3},
        {"hub.missing": "renormalize", "hub.clip_norm": 2.5, "hub.min_replies": 0.5},
        {"hub.max_failed_rounds": 0, "hubs.mixing": "metropolis", "tau": 3},
    ],
)
def test_from_run_config_means_what_the_engine_means(overrides, tmp_path):
    run_config = {**to_run_config(default_config()), **overrides, "output_dir": str(tmp_path)}
    cfg = validate(engine_config(run_config))
    engine = build_mllsgd(prepare(cfg))
    strategy = MLLSGD.from_run_config(None, run_config)
    assert strategy.sizes == engine.sizes
    assert (strategy.tau, strategy.q, strategy.seed) == (engine.tau, engine.q, engine.seed)
    assert np.array_equal(strategy.rates, engine.rates)  # the same draw, bit for bit
    assert sorted(strategy.graph.edges) == sorted(engine.graph.edges)
    for name in ("missing", "clip_norm", "min_replies", "max_failed_rounds", "wait_for_slowest"):
        assert getattr(strategy, name) == getattr(engine, name), name
    assert strategy._mixing_method == cfg.hubs.mixing
    equal = cfg.weighting == "equal"
    assert strategy._weights == [1.0 if equal else None] * strategy.num_workers  # None: replies
    assert strategy.evaluate_hubs == cfg.eval.hubs
    assert strategy.evaluate_every == (cfg.eval.every // cfg.tau or cfg.q)


def test_a_flower_apps_own_keys_are_left_to_it():
    run_config = {"hubs.workers": "2,2", "num-server-rounds": 3, "local-epochs": 1, "lr": 0.1}
    assert mllsgd_arguments(run_config, {}) == {"hubs": (2, 2)}
    # keyword arguments win, and the keys of an argument they give are not read
    args = mllsgd_arguments({**run_config, "tau": 4, "eval.every": 6}, {"evaluate_every": 0})
    assert (args["tau"], args["evaluate_every"]) == (4, 0)


@pytest.mark.parametrize(
    ("run_config", "sizes", "rates"),
    [
        ({"hubs.workers": "4"}, (4,), [1.0] * 4),
        ({"hubs.count": 3, "hubs.workers": "4"}, (4, 4, 4), [1.0] * 12),
        ({"hubs.count": 2, "hubs.workers": 2, "rates.values": "0.8"}, (2, 2), [0.8] * 4),
        ({"hubs.workers": "1, 2", "rates.p": 0.5}, (1, 2), [0.5] * 3),
        ({"hubs.workers": "2", "rates.values": ""}, (2,), [1.0] * 2),  # "": null
    ],
)
def test_single_values_stand_for_every_hub_or_worker(run_config, sizes, rates):
    strategy = MLLSGD.from_run_config(None, run_config)
    assert strategy.sizes == sizes and strategy.rates.tolist() == rates


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"hubs.workers": "2,,2"}, "hubs.workers: expected comma-separated integers without empty"),
        ({"hubs.workers": "2,x"}, "hubs.workers: expected comma-separated integers, got '2,x'"),
        ({"hubs.workers": "2,2", "rates.values": "1.0,x"}, "rates.values: expected comma-sep"),
        ({"hubs.workers": "2,2", "rates.values": "1,,1"}, "rates.values: expected comma-sep"),
        ({"hubs.workers": "2,2", "rates.values": "1,1,1"}, "rates.values: expected 4 rates"),
        ({"hubs.count": 3, "hubs.workers": "2,2"}, "hubs.workers: expected one worker count per"),
        ({"hubs.count": 0, "hubs.workers": 2}, "hubs.count: expected an integer >= 1"),
        ({"hubs.count": 2}, "hubs.workers: expected the workers of each hub"),
        ({"hubs.workers": 2, "tau": 0}, "tau: expected an integer >= 1"),
        ({"hubs.workers": 2, "q": "2"}, "q: expected an integer >= 1, got '2'"),
        ({"hubs.workers": 2, "seed": -1}, "seed: expected an integer >= 0"),
        ({"hubs.workers": "2,2", "hubs.graph": "ring"}, "hubs.graph: expected at least 3 hubs"),
        ({"hubs.workers": 2, "hubs.graph": "/etc/hosts"}, "hubs.graph: expected one of complete"),
        ({"hubs.workers": 2, "hubs.mixing": "h.txt"}, "hubs.mixing: expected one of auto"),
        ({"hubs.workers": 2, "rates.distribution": "gauss"}, "rates.distribution: expected one"),
        ({"hubs.workers": 2, "rates.p": 1.5}, "rates.p: expected a rate p in (0, 1]"),
        ({"hubs.workers": 2, "rates.low": "x"}, "rates.low: expected a finite number, got 'x'"),
        ({"hubs.workers": 2, "weighting": "data-size"}, "weighting: expected one of data_size"),
        ({"hubs.workers": 2, "wait_for_slowest": "yes"}, "wait_for_slowest: expected true or"),
        ({"hubs.workers": 2, "hub.missing": "drop"}, "hub.missing: expected one of stay"),
        ({"hubs.workers": 2, "hub.clip_norm": 0}, "hub.clip_norm: expected a finite number > 0"),
        ({"hubs.workers": 2, "hub.min_replies": 2.0}, "hub.min_replies: expected a finite number"),
        ({"hubs.workers": 2, "eval.every": 6, "tau": 4}, "eval.every: expected 0 or a multiple"),
        ({"hubs.workers": 2, "hubs.wokers": 2}, "hubs.wokers: not a key of MLL-SGD's run config"),
        ({"hubs": "2,2"}, "hubs: renamed hubs.workers"),
        ({"hubs.workers": 2, "hub-graph": "ring"}, "hub-graph: renamed hubs.graph"),
        ({"hubs.workers": 2, "rates": "1,1"}, "rates: renamed rates.values"),
    ],
)
def test_a_bad_value_names_its_key_in_one_line(run_config, message):
    with pytest.raises(ConfigError) as err:
        MLLSGD.from_run_config(None, run_config)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_one_parser_of_workers_per_hub_and_distinct_rate_functions():
    assert hub_sizes(None, "3,2") == hub_sizes(2, [3, 2]) == (3, 2)
    assert hub_sizes(3, 4) == hub_sizes(3, "4") == hub_sizes(3, [4]) == (4, 4, 4)
    with pytest.raises(ConfigError, match="^hubs: expected comma-separated integers"):
        hub_sizes(None, "2,x", keys=("hubs", "hubs"))
    # MLLSGD's rates argument (one rate, or one per worker) vs a named distribution's draw
    assert worker_rates(0.5, 3).tolist() == [0.5, 0.5, 0.5]
    assert operating_rates(3, "fixed", p=0.5).tolist() == [0.5, 0.5, 0.5]
    assert operating_rates(2, "explicit", values="0.5").tolist() == [0.5, 0.5]
