"""Hub strategies: hostile or failed replies, stock strategies and Flower wrapper chains."""

import copy
import itertools
from collections.abc import Callable
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.clients import multilevel_mod
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.prepare import build_mllsgd, initial_model, prepare, train_config
from flwr_multilevel.strategies import HubStrategy, RunAborted, WorkerSpec
from flwr_multilevel.strategies.peer import InProcessPeerLayer

from .helpers import flat, run_engine


def corrupt(reply: Message, mode: str, instruction: Message) -> Message:
    arrays = next(iter(reply.content.array_records.values()))
    metrics = dict(next(iter(reply.content.metric_records.values())).items())
    nds = {k: a.numpy().copy() for k, a in arrays.items()}
    if mode == "nan":
        nds["linear.weight"][0, 0] = np.nan
    elif mode == "shape":
        nds["linear.weight"] = nds["linear.weight"][:-1]
    elif mode == "missing-key":
        del metrics["steps"]
    elif mode == "missing-array":
        del nds["linear.bias"]
    elif mode == "steps":
        metrics["steps"] = 99
    elif mode == "extra-metric":  # Flower's own FedAvg raises on inconsistent keys
        metrics["my-extra"] = 1.0
    elif mode == "huge-text-error":
        raise RuntimeError("x" * 1_000_000)
    arrays_out = ArrayRecord({k: Array(v) for k, v in nds.items()})
    if mode == "shape-lie":  # declared shape right, payload of another shape
        real = Array(np.zeros((2, 2), dtype=np.float32))
        fake = Array(
            dtype=real.dtype,
            shape=tuple(arrays["linear.weight"].shape),
            stype=real.stype,
            data=real.data,
        )
        arrays_out["linear.weight"] = fake
    if mode == "oversized":  # right declared shape, a 20 MB payload: refused before decoding
        good = arrays_out["linear.bias"]
        arrays_out["linear.bias"] = Array(
            dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=bytes(20_000_000)
        )
    if mode == "bad-npy":
        good = arrays_out["linear.bias"]
        arrays_out["linear.bias"] = Array(
            dtype=good.dtype, shape=tuple(good.shape), stype=good.stype, data=b"not npy"
        )
    records = RecordDict({"arrays": arrays_out, "metrics": MetricRecord(metrics)})
    return Message(records, reply_to=instruction)


MODES = {
    1: "nan",
    2: "shape",
    3: "missing-key",
    4: "raise",
    5: "steps",
    6: "missing-array",
    7: "shape-lie",
    8: "bad-npy",
    9: "huge-text-error",
    10: "oversized",
}


def hostile_app(modes, good):
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        pid = context.node_config["partition-id"]
        if modes.get(pid) == "raise":
            raise RuntimeError("worker crashed")
        reply = client_app(msg, context)
        arrays = cast(ArrayRecord, reply.content["arrays"])
        good[pid] = flat([a.numpy() for a in arrays.values()])
        return corrupt(reply, modes[pid], msg) if pid in modes else reply

    return app


@pytest.mark.parametrize("missing", ["stay", "renormalize"])
def test_hostile_replies_never_reach_the_average(config, missing):
    good: dict[int, np.ndarray] = {}
    cfg = config("hubs.count=1", "hubs.workers=12", "tau=3", "q=1", "rounds=1")
    cfg.data.partition, cfg.weighting = "unequal", "data_size"
    exp = prepare(cfg)
    mll = build_mllsgd(exp)
    mll.missing = missing
    init = initial_model(exp)
    result = mll.start(
        LocalGrid(hostile_app(MODES, good), 12),
        init,
        1,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    w = exp.hierarchy.weights
    valid = [0, 11]
    start = flat([a.numpy() for a in init.values()])
    if missing == "stay":  # a worker without a valid reply took no step: x_i = y_d
        xs = [good[i] if i in valid else start for i in range(12)]
        expected = sum(w[i] * xs[i] for i in range(12)) / w.sum()
    else:
        expected = sum(w[i] * good[i] for i in valid) / w[valid].sum()
    np.testing.assert_allclose(
        flat([a.numpy() for a in result.arrays.values()]), expected, atol=1e-6
    )
    report = mll.report
    assert sorted(report.steps) == valid and report.missing == list(range(1, 11))
    assert len(report.dropped) == 10
    text = " | ".join(report.dropped)
    for needle in (
        "NaN or Inf",
        "expected shape",
        "metric 'steps'",
        "worker crashed",
        "expected an integer in [0, 3]",
        "expected arrays",
        "payload holds shape (2, 2)",
        "payload does not decode",
        "payload of 20000000 bytes",
    ):
        assert needle in text, needle
    assert len(text) < 3000  # a 1 MB error text is cut to one short line


def test_extra_metric_keys_do_not_break_aggregation(config):
    good: dict[int, np.ndarray] = {}
    cfg = config("hubs.count=1", "hubs.workers=3", "tau=2", "q=1", "rounds=1")
    exp = prepare(cfg)
    mll = build_mllsgd(exp)
    result = mll.start(
        LocalGrid(hostile_app({1: "extra-metric"}, good), 3),
        initial_model(exp),
        1,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    v = exp.hierarchy.v
    expected = sum(v[i] * good[i] for i in range(3))
    np.testing.assert_allclose(
        flat([a.numpy() for a in result.arrays.values()]), expected, atol=1e-6
    )
    assert not mll.report.dropped


def test_a_hub_failing_round_after_round_stops_the_run(config):
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        if context.node_config["partition-id"] == 2:
            raise RuntimeError("disk full")
        return client_app(msg, context)

    class Closing(InProcessPeerLayer):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    cfg = config("hubs.count=2", "hubs.workers=[2,1]", "rounds=6", "q=1")
    exp = prepare(cfg)
    layer = Closing(exp.mixing)
    mll = build_mllsgd(exp, peer_layer=layer)
    mll.max_failed_rounds = 3
    seen = []
    mll.on_round = lambda report, _: seen.append(report.server_round)
    with pytest.raises(RunAborted, match=r"hub 1 kept its model for 3 rounds .*disk full"):
        mll.start(
            LocalGrid(app, 3),
            initial_model(exp),
            6,
            train_config=ConfigRecord({**train_config(exp)}),
        )
    assert seen == [1, 2, 3]  # stopped in round 3, after it was recorded
    assert layer.closed == 1  # a networked layer's server does not outlive the aborted run


def test_hub_without_valid_reply_keeps_its_model(config):
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        raise RuntimeError("down")

    cfg = config("hubs.count=1", "hubs.workers=2", "rounds=1", "q=1")
    exp = prepare(cfg)
    mll = build_mllsgd(exp)
    init = initial_model(exp)
    result = mll.start(LocalGrid(app, 2), init, 1, train_config=ConfigRecord({**train_config(exp)}))
    assert flat([a.numpy() for a in result.arrays.values()]).tolist() == (
        flat([a.numpy() for a in init.values()]).tolist()
    )
    assert list(mll.report.failed_hubs) == [0]


STOCK = [
    FedAvg(),
    FedProx(proximal_mu=0.5),
    FedAdam(eta=0.05),
    FedYogi(eta=0.05),
    FedAvgM(server_learning_rate=0.8, server_momentum=0.5),
]


@pytest.mark.parametrize("strategy", STOCK, ids=lambda s: type(s).__name__)
def test_stock_strategies_run_at_every_hub_and_stay_unchanged(config, strategy):
    cfg = config("hubs.count=3", "hubs.workers=[1,2,3]", "tau=2", "q=2", "rounds=4")
    before = copy.deepcopy(vars(strategy))
    sent: list[tuple[int, int]] = []
    exp = prepare(cfg)
    exp.strategy = strategy
    mll = build_mllsgd(exp)
    grid = LocalGrid(client_app, exp.hierarchy.num_workers)
    original = grid.push_messages

    def spy(messages):
        messages = list(messages)
        for m in messages:
            if "config" not in m.content:  # the discovery message
                continue
            cfg_rec = m.content["config"]
            if "hub-id" in cfg_rec:
                sent.append((int(cfg_rec["hub-id"]), int(cfg_rec["worker-id"])))
            if isinstance(strategy, FedProx) and "hub-id" in cfg_rec:
                assert cfg_rec["proximal-mu"] == 0.5
        return original(messages)

    grid.push_messages = spy  # type: ignore[method-assign]
    result = mll.start(
        grid, initial_model(exp), cfg.rounds, train_config=ConfigRecord({**train_config(exp)})
    )
    expected = {(int(exp.hierarchy.hub_of[i]), i) for i in range(6)}
    assert set(sent) == expected and len(sent) == 6 * cfg.rounds
    assert len({id(hub.strategy) for hub in mll.hubs.values()}) == 3  # one copy per hub
    assert all(hub.strategy is not strategy for hub in mll.hubs.values())
    assert np.isfinite(flat([a.numpy() for a in result.arrays.values()])).all()
    assert sorted(result.train_metrics_clientapp) == [1, 2, 3, 4]
    assert repr(vars(strategy)) == repr(before)  # the caller's strategy is untouched


def every_stock_strategy() -> list[Strategy]:
    """One instance of every strategy Flower exports, with what it needs to run."""
    made = []
    for name in flwr_strategies.__all__:
        cls = getattr(flwr_strategies, name)
        if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls is Strategy:
            continue
        make: Callable[..., Strategy] = cls  # each subclass takes its own arguments
        if name.startswith("DifferentialPrivacy"):
            kwargs = {"noise_multiplier": 0.0, "num_sampled_clients": 1}
            norm = "initial_clipping_norm" if "Adaptive" in name else "clipping_norm"
            made.append(make(FedAvg(), **kwargs, **{norm: 1e6}))
        elif name in ("Krum", "MultiKrum", "Bulyan"):
            made.append(make(num_malicious_nodes=0))
        elif name == "QFedAvg":  # it reads the loss the workers report
            made.append(make(client_learning_rate=0.1, train_loss_key="train-loss"))
        else:
            made.append(make())
    return made


@pytest.mark.parametrize("strategy", every_stock_strategy(), ids=lambda s: type(s).__name__)
def test_every_flower_strategy_finishes_on_a_one_worker_hub(config, strategy):
    cfg = config("hubs.count=2", "hubs.workers=[1,2]", "tau=2", "q=1", "rounds=2")
    exp = prepare(cfg)
    exp.strategy = strategy
    if type(strategy).__name__.startswith("FedXgb"):  # trees, not averages: refused up front
        with pytest.raises(ValueError, match="combines XGBoost trees"):
            build_mllsgd(exp).start(LocalGrid(client_app, 3), initial_model(exp), 1)
        return
    mll = build_mllsgd(exp)
    result = mll.start(
        LocalGrid(client_app, 3),
        initial_model(exp),
        2,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    assert sorted(result.train_metrics_clientapp) == [1, 2]  # finished, never waited forever
    assert np.isfinite(flat([a.numpy() for a in result.arrays.values()])).all()


def test_dp_fixed_clipping_without_noise_equals_fedavg_with_v(config):
    """Zero noise and a huge clip: the DP chain must average exactly like FedAvg with v_i."""
    # every worker steps (p = 1): Flower's DP clipping divides by the norm of a zero update
    cfg = config("hubs.count=2", "hubs.workers=[2,3]", "tau=3", "q=2", "rounds=4")
    cfg.data.partition, cfg.weighting = "unequal", "data_size"
    cfg.rates.distribution = "fixed"
    _, plain = run_engine(cfg, strategy=FedAvg())
    dp = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 0.0, 1e9, num_sampled_clients=3)
    _, private = run_engine(cfg, strategy=dp)
    ada = DifferentialPrivacyServerSideAdaptiveClipping(
        FedAvg(), 0.0, num_sampled_clients=3, initial_clipping_norm=1e9
    )
    _, adaptive = run_engine(cfg, strategy=ada)
    for hub in range(2):
        np.testing.assert_allclose(flat(private[hub]), flat(plain[hub]), atol=1e-6)
        np.testing.assert_allclose(flat(adaptive[hub]), flat(plain[hub]), atol=1e-6)


def test_hub_strategy_refuses_a_chain_that_cannot_weight():
    class Bare(FedAvg):
        pass

    bare = Bare()
    del bare.weighted_by_key
    with pytest.raises(ValueError, match="cannot average with the hub's weights"):
        HubStrategy(bare, 0, {1: WorkerSpec(0, 1.0, 1.0)}, 2)


def test_hub_never_changes_the_callers_replies(config):
    cfg = config("hubs.count=1", "hubs.workers=2", "tau=2", "rounds=1", "q=1")
    exp = prepare(cfg)
    grid = LocalGrid(client_app, 2)
    hub = HubStrategy(
        FedAvg(), 0, {1000: WorkerSpec(0, 3.0, 1.0), 1001: WorkerSpec(1, 1.0, 1.0)}, 2
    )
    config_record = ConfigRecord({**train_config(exp), "time-steps": 2})
    messages = list(hub.configure_train(1, initial_model(exp), config_record, grid))
    replies = list(grid.send_and_receive(messages))
    snapshot = [(id(r.content), dict(r.content["metrics"].items())) for r in replies]
    hub.aggregate_train(1, replies)
    assert [(id(r.content), dict(r.content["metrics"].items())) for r in replies] == snapshot
    assert "hub-id" not in config_record


def test_fedprox_mu_changes_the_worker_update(config):
    cfg = config("hubs.count=1", "hubs.workers=2", "rounds=2", "q=1", "lr=1.0")
    _, plain = run_engine(cfg, strategy=FedAvg())
    _, prox = run_engine(cfg, strategy=FedProx(proximal_mu=5.0))
    assert np.abs(flat(plain[0]) - flat(prox[0])).max() > 1e-4


def test_fedavgm_base_follows_the_gossiped_hub_model(config):
    cfg = config("hubs.count=2", "hubs.workers=2", "rounds=1", "q=1", "tau=2")
    exp = prepare(cfg)
    exp.strategy = FedAvgM(server_learning_rate=0.5, server_momentum=0.0)
    mll = build_mllsgd(exp)
    grid = LocalGrid(client_app, 4)
    mll.start(grid, initial_model(exp), 1, train_config=ConfigRecord({**train_config(exp)}))
    model = mll.models[0]
    list(mll.hubs[0].configure_train(2, model, ConfigRecord(), grid))
    strategy = mll.hubs[0].strategy
    assert isinstance(strategy, FedAvgM)
    assert strategy.current_arrays is model


def poisoner(scale=None, value=None):
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        reply = client_app(msg, context)
        if context.node_config["partition-id"] != 1:
            return reply
        arrays = cast(ArrayRecord, reply.content["arrays"])
        poisoned = {
            k: Array(a.numpy() * scale if scale is not None else np.full_like(a.numpy(), value))
            for k, a in arrays.items()
        }
        reply.content["arrays"] = ArrayRecord(poisoned)
        return reply

    return app


@pytest.mark.parametrize("attack", [{"scale": 1e6}, {"value": 3e38}], ids=["x1e6", "3e38"])
def test_update_clipping_bounds_a_poisoned_worker(config, attack):
    cfg = config("hubs.count=1", "hubs.workers=4", "tau=2", "q=1", "rounds=3")
    exp = prepare(cfg)
    clean = build_mllsgd(exp)
    clean.start(
        LocalGrid(client_app, 4),
        initial_model(exp),
        3,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    reference = flat([a.numpy() for a in clean.models[0].values()])

    results = {}
    for clip in (None, 1.0):
        mll = build_mllsgd(exp)
        mll.clip_norm = clip
        mll.start(
            LocalGrid(poisoner(**attack), 4),
            initial_model(exp),
            3,
            train_config=ConfigRecord({**train_config(exp)}),
        )
        results[clip] = (flat([a.numpy() for a in mll.models[0].values()]), mll.report)
    unclipped, _ = results[None]
    assert np.isfinite(unclipped).all()  # never NaN: a non-finite aggregate is refused
    assert np.abs(unclipped - reference).max() > 100  # the attack works without clipping
    clipped, report = results[1.0]
    assert not report.failed_hubs
    # one worker's update is bounded by the clip norm: the hub moves by at most v_1 * 1.0 per round
    assert np.linalg.norm(clipped - reference) < 3 * 1.0


def test_a_hub_cut_off_from_its_workers_sits_the_gossip_out(config):
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg, context):
        if (
            context.node_config["partition-id"] in (2, 3)
            and msg.content["config"]["server-round"] == 1
        ):
            raise RuntimeError("link down")
        return client_app(msg, context)

    cfg = config("hubs.count=3", "hubs.workers=2", "rounds=2", "q=1", "tau=2")
    exp = prepare(cfg)
    reports, models = [], []

    def on_round(report, hub_models):
        reports.append(report)
        models.append(list(hub_models))

    class Telling(InProcessPeerLayer):
        withheld: list[tuple[int, int, str]] = []

        def withhold(self, hub_id: int, server_round: int, reason: str) -> None:
            self.withheld.append((hub_id, server_round, reason))

    layer = Telling(exp.mixing)
    mll = build_mllsgd(exp, on_round=on_round, peer_layer=layer)
    init = initial_model(exp)
    mll.start(LocalGrid(app, 6), init, 2, train_config=ConfigRecord({**train_config(exp)}))
    first = reports[0]
    assert list(first.failed_hubs) == [1] and first.skipped_peers == {0: [1], 2: [1]}
    # the hub says so through its peer layer (a networked one tells its neighbours at once)
    assert [(d, r) for d, r, _ in layer.withheld] == [(1, 1)]
    assert layer.withheld[0][2] == first.failed_hubs[1]
    # hub 1 kept x_1; hubs 0 and 2 (path ends) mixed with nobody: y = z
    assert flat([a.numpy() for a in models[0][1].values()]).tolist() == (
        flat([a.numpy() for a in init.values()]).tolist()
    )
    second = reports[1]  # back to normal: everyone gossips again
    assert not second.failed_hubs and not second.skipped_peers and second.bytes_hubs > 0


def test_the_hub_metrics_do_not_depend_on_the_order_replies_arrive_in(config):
    """Replies arrive in any order (threads, Ray, the network): the hub's numbers are the same."""
    cfg = config("hubs.count=1", "hubs.workers=4", "tau=4", "rounds=1", "q=1")
    exp = prepare(cfg)
    grid = LocalGrid(client_app, 4)
    specs = {1000 + w: WorkerSpec(w, [3.0, 1.0, 7.0, 4.0][w], 1.0) for w in range(4)}
    config_record = ConfigRecord({**train_config(exp), "time-steps": 4})
    hub = HubStrategy(FedAvg(), 0, specs, 4)
    replies = list(
        grid.send_and_receive(hub.configure_train(1, initial_model(exp), config_record, grid))
    )
    results = []
    for order in itertools.permutations(range(4)):
        hub = HubStrategy(
            FedAvg(), 0, {n: WorkerSpec(s.worker_id, s.weight, 1.0) for n, s in specs.items()}, 4
        )
        hub.configure_train(1, initial_model(exp), config_record, grid)
        arrays, metrics = hub.aggregate_train(1, [replies[i] for i in order])
        assert arrays is not None and metrics is not None
        results.append(({k: a.numpy().tobytes() for k, a in arrays.items()}, dict(metrics.items())))
    assert all(result == results[0] for result in results[1:])
