"""Hub strategies: invalid worker replies are dropped, stock strategies run unchanged."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.experiment import initial_model, prepare, train_config
from flwr_multilevel.local_grid import LocalGrid
from flwr_multilevel.strategies import MLLSGD

from .helpers import flat, run_engine


def corrupt(reply: Message, mode: str, instruction: Message) -> Message:
    arrays = next(iter(reply.content.array_records.values()))
    metrics = dict(next(iter(reply.content.metric_records.values())).items())
    nds = {k: a.numpy().copy() for k, a in arrays.items()}
    if mode == "nan":
        nds["linear.weight"][0, 0] = np.nan
    elif mode == "inf-loss":
        metrics["train-loss"] = float("inf")
    elif mode == "shape":
        nds["linear.weight"] = nds["linear.weight"][:-1]
    elif mode == "missing-key":
        del metrics["steps"]
    elif mode == "missing-array":
        del nds["linear.bias"]
    elif mode == "steps":
        metrics["steps"] = 99
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in nds.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content, reply_to=instruction)


def test_invalid_replies_are_dropped_and_weights_renormalised(config):
    modes = {
        1: "nan",
        2: "shape",
        3: "missing-key",
        4: "raise",
        5: "steps",
        6: "inf-loss",
        7: "missing-array",
    }
    good: dict[int, np.ndarray] = {}
    app = ClientApp()

    @app.train()
    def train(msg, context):
        pid = context.node_config["partition-id"]
        if modes.get(pid) == "raise":
            raise RuntimeError("worker crashed")
        reply = client_app(msg, context)
        good[pid] = flat([a.numpy() for a in reply.content["arrays"].values()])
        return corrupt(reply, modes[pid], msg) if pid in modes else reply

    @app.query("worker")
    def query(msg, context):
        return client_app(msg, context)

    cfg = config(
        "hubs.count=1",
        "hubs.workers=9",
        "tau=3",
        "q=1",
        "rounds=1",
        "data.partition=unequal",
        "weighting=data_size",
    )
    exp = prepare(cfg)
    engine = MLLSGD(exp.hierarchy, tau=3, q=1, mixing=exp.mixing, train_config=train_config(exp))
    reports = []
    models = engine.start(
        LocalGrid(app, 9), initial_model(exp), 1, on_round=lambda report, _: reports.append(report)
    )
    valid = [0, 8]
    w = exp.hierarchy.weights[valid]
    expected = sum(wi * good[i] for wi, i in zip(w, valid, strict=False)) / w.sum()
    np.testing.assert_allclose(flat([a.numpy() for a in models[0].values()]), expected, atol=1e-6)
    report = reports[0]
    assert sorted(report.steps) == valid
    assert len(report.dropped) == 7
    text = " ".join(report.dropped)
    for needle in (
        "NaN or Inf",
        "expected shape",
        "missing metrics ['steps']",
        "worker crashed",
        "expected an integer in [0, 3]",
        "'train-loss' is not a finite number",
        "expected arrays",
    ):
        assert needle in text


def test_hub_without_valid_reply_keeps_its_model(config):
    app = ClientApp()

    @app.train()
    def train(msg, context):
        raise RuntimeError("down")

    @app.query("worker")
    def query(msg, context):
        return client_app(msg, context)

    cfg = config("hubs.count=1", "hubs.workers=2", "rounds=1", "q=1")
    exp = prepare(cfg)
    engine = MLLSGD(
        exp.hierarchy, tau=cfg.tau, q=1, mixing=exp.mixing, train_config=train_config(exp)
    )
    init = initial_model(exp)
    models = engine.start(LocalGrid(app, 2), init, 1)
    np.testing.assert_array_equal(
        flat([a.numpy() for a in models[0].values()]), flat([a.numpy() for a in init.values()])
    )


@pytest.mark.parametrize(
    "strategy",
    [
        FedAvg(),
        FedProx(proximal_mu=0.5),
        FedAdam(eta=0.05),
        FedYogi(eta=0.05),
        FedAvgM(server_learning_rate=0.8, server_momentum=0.5),
    ],
    ids=lambda s: type(s).__name__,
)
def test_stock_strategies_run_unchanged_at_every_hub(config, strategy):
    cfg = config("hubs.count=3", "hubs.workers=[1,2,3]", "tau=2", "q=2", "rounds=4")
    sent: list[tuple[int, int]] = []
    exp = prepare(cfg)
    eng = MLLSGD(
        exp.hierarchy,
        tau=2,
        q=2,
        mixing=exp.mixing,
        strategy=strategy,
        train_config=train_config(exp),
    )
    grid = LocalGrid(client_app, exp.hierarchy.num_workers)
    original = grid.push_messages

    def spy(messages):
        messages = list(messages)
        for m in messages:
            cfg_rec = m.content["config"]
            sent.append((int(cfg_rec["hub-id"]), int(cfg_rec["worker-id"])))
            if isinstance(strategy, FedProx):
                assert cfg_rec["proximal-mu"] == 0.5
        return original(messages)

    grid.push_messages = spy  # type: ignore[method-assign]
    models = eng.start(grid, initial_model(exp), cfg.rounds, worker_nodes=list(grid.get_node_ids()))
    # each hub instructs exactly its own workers, once per round
    expected = {(int(exp.hierarchy.hub_of[i]), i) for i in range(6)}
    assert set(sent) == expected and len(sent) == 6 * cfg.rounds
    assert all(type(hub.strategy) is type(strategy) for hub in eng.hubs)
    assert len({id(hub.strategy) for hub in eng.hubs}) == 3  # one instance per hub
    assert all(np.all(np.isfinite(flat([a.numpy() for a in m.values()]))) for m in models)


def test_fedprox_mu_changes_the_worker_update(config):
    cfg = config("hubs.count=1", "hubs.workers=2", "rounds=2", "q=1", "lr=1.0")
    _, plain = run_engine(cfg, strategy=FedAvg())
    _, prox = run_engine(cfg, strategy=FedProx(proximal_mu=5.0))
    assert np.abs(flat(plain[0]) - flat(prox[0])).max() > 1e-4


def test_fedavgm_base_follows_the_gossiped_hub_model(config):
    cfg = config("hubs.count=2", "hubs.workers=2", "rounds=2", "q=1", "tau=2")
    exp = prepare(cfg)
    eng = MLLSGD(
        exp.hierarchy,
        tau=2,
        q=1,
        mixing=exp.mixing,
        strategy=FedAvgM(server_learning_rate=0.5, server_momentum=0.0),
        train_config=train_config(exp),
    )
    grid = LocalGrid(client_app, 4)
    models = eng.start(grid, initial_model(exp), 1)
    list(eng.hubs[0].configure_train(2, models[0], ConfigRecord(), grid))
    assert eng.hubs[0].strategy.current_arrays is models[0]
