"""Robust rules (FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan) with missing workers.

Under ``hub.missing=stay`` a worker without a valid reply (it failed, its
reply was dropped, or it timed out) took no step: it enters the hub's rule as
the hub model ``y_d``, for weighted and unweighted rules alike. Every rule
finishes, through the real engine, and its aggregate is the rule's own on
those inputs; the hub's model is never consumed by a rule.
"""

import logging
import os
import time
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import strategy as flwr_strategies

from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.client_app import load_task
from flwr_multilevel.clients import make_worker_train, multilevel_mod
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.engines.simulation import run_in_simulation
from flwr_multilevel.experiment.prepare import build_mllsgd, initial_model, prepare, train_config
from flwr_multilevel.protocol.keys import WORKER_WEIGHT as WEIGHT_KEY
from flwr_multilevel.server_app import make_server_app

from .conftest import make_config
from .helpers import read_csv

RULES = [
    ("FedMedian", []),
    ("FedTrimmedAvg", ["strategy.options.beta=0.3"]),
    ("Krum", ["strategy.options.num_malicious_nodes=1"]),
    (
        "MultiKrum",
        ["strategy.options.num_malicious_nodes=1", "strategy.options.num_nodes_to_select=3"],
    ),
    ("Bulyan", ["strategy.options.num_malicious_nodes=1"]),
]
WORKERS = 7  # Bulyan with f=1 needs 4f+3 = 7
RAISES, NAN, LATE = 1, 3, 5  # worker 1 fails, worker 3 replies NaN, worker 5 overruns round 1


class Clock:
    """``time.monotonic`` of the LocalGrid; the late worker moves it on."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def faulty_app(good: dict[int, dict[str, np.ndarray]], clock: Clock) -> ClientApp:
    """The real worker, with one worker raising, one replying NaN and one timing out."""
    app = ClientApp(mods=[multilevel_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        worker = int(context.node_config["partition-id"])
        server_round = int(cast(int, msg.content["config"]["server-round"]))
        if worker == RAISES:
            raise RuntimeError("disk full")
        reply = client_app(msg, context)
        arrays = cast(ArrayRecord, reply.content["arrays"])
        if server_round == 1:
            good[worker] = {k: a.numpy() for k, a in arrays.items()}
        if worker == LATE and server_round == 1:
            clock.now += 1000.0  # far past the round's deadline: its reply is discarded
        if worker == NAN:
            bad = {k: a.numpy().copy() for k, a in arrays.items()}
            next(iter(bad.values())).flat[0] = np.nan
            metrics = reply.content["metrics"]
            record = ArrayRecord({k: Array(v) for k, v in bad.items()})
            content = RecordDict({"arrays": record, "metrics": metrics})
            return Message(content, reply_to=msg)
        return reply

    return app


class LateLastGrid(LocalGrid):
    """A LocalGrid that runs the late worker's message last (it cuts the round short)."""

    def push_messages(self, messages):
        def late(message: Message) -> bool:
            config = message.content.get("config")
            return isinstance(config, ConfigRecord) and config.get("worker-id") == LATE

        return super().push_messages(sorted(messages, key=late))


def reference(name, options, inputs, weights):
    """The aggregate of Flower's own rule on ``inputs`` (worker order), weighted by ``weights``."""
    rule = getattr(flwr_strategies, name)(**options)
    rule.weighted_by_key = WEIGHT_KEY
    replies = []
    for node, (arrays, weight) in enumerate(zip(inputs, weights, strict=True), 1):
        sent = Message(RecordDict(), dst_node_id=node, message_type="train")
        record = ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})
        metrics = MetricRecord({WEIGHT_KEY: float(weight), "num-examples": 1})
        content = RecordDict({"arrays": record, "metrics": metrics})
        replies.append(Message(content, reply_to=sent))
    arrays, _ = rule.aggregate_train(1, replies)
    return {k: a.numpy() for k, a in arrays.items()}


def run_rule(tmp_path, name, extra, missing="stay"):
    """Run 2 rounds of one hub of WORKERS workers; return (exp, reports, round-1 model, start)."""
    cfg = make_config(
        tmp_path,
        [
            "hubs.count=1",
            f"hubs.workers={WORKERS}",
            "rounds=2",
            "tau=2",
            "q=1",
            f"hub.missing={missing}",
            f"strategy.name={name}",
            *extra,
        ],
    )
    exp = prepare(cfg)
    reports, models = [], []

    def on_round(report, hub_models):
        reports.append(report)
        models.append(hub_models[0])

    mll = build_mllsgd(exp, on_round=on_round)
    good: dict[int, dict[str, np.ndarray]] = {}
    clock = Clock()
    init = initial_model(exp)
    start = {k: a.numpy().copy() for k, a in init.items()}
    mll.start(
        LateLastGrid(faulty_app(good, clock), WORKERS, clock=clock),
        init,
        2,
        timeout=60.0,
        train_config=ConfigRecord({**train_config(exp)}),
    )
    assert {k: a.numpy().tolist() for k, a in init.items()} == {
        k: v.tolist() for k, v in start.items()
    }  # the hub's model y_d was never emptied or changed by a rule
    return exp, reports, models, good, start


@pytest.mark.parametrize(("name", "extra"), RULES, ids=[r[0] for r in RULES])
def test_every_robust_rule_finishes_with_missing_workers_as_y_d(tmp_path, name, extra):
    exp, reports, models, good, start = run_rule(tmp_path, name, extra)
    assert [r.server_round for r in reports] == [1, 2] and not any(r.failed_hubs for r in reports)
    first = reports[0]
    assert sorted(first.missing) == [RAISES, NAN, LATE]
    assert sorted(first.steps) == sorted(set(range(WORKERS)) - set(first.missing))
    text = " | ".join(first.dropped)
    assert "disk full" in text and "NaN or Inf" in text and "timed out" in text
    # the rule saw every worker: a missing one as y_d, with its own weight w_i
    inputs = [good[w] if w in first.steps else start for w in range(WORKERS)]
    options = dict(e.removeprefix("strategy.options.").split("=") for e in extra)
    options = {k: int(v) if k.startswith("num_") else float(v) for k, v in options.items()}
    want = reference(name, options, inputs, exp.hierarchy.weights.tolist())
    got = {k: a.numpy() for k, a in models[0].items()}
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6)
    assert all(np.isfinite(a.numpy()).all() for a in models[1].values())


@pytest.mark.parametrize("name", ["FedMedian", "FedTrimmedAvg"])
def test_renormalize_hands_the_rule_only_the_valid_replies(tmp_path, name):
    extra = dict(RULES)[name]
    exp, reports, models, good, _ = run_rule(tmp_path, name, extra, missing="renormalize")
    first = reports[0]
    inputs = [good[w] for w in sorted(first.steps)]
    options = {"beta": 0.3} if name == "FedTrimmedAvg" else {}
    want = reference(name, options, inputs, [1.0] * len(inputs))
    for key, value in want.items():
        np.testing.assert_allclose(models[0][key].numpy(), value, rtol=1e-5, atol=1e-6)


def test_bulyan_short_of_replies_under_renormalize_keeps_the_model_and_says_why(tmp_path):
    _, reports, _, _, _ = run_rule(
        tmp_path, "Bulyan", ["strategy.options.num_malicious_nodes=1"], missing="renormalize"
    )
    reason = reports[0].failed_hubs[0]
    assert reason.startswith("Bulyan returned no aggregate (") and "valid replies" in reason


def test_a_round_with_failures_is_one_warning_line(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flwr")
    run_rule(tmp_path, "FedMedian", [])
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    per_round = [line for line in lines if line.startswith("round ")]
    assert len(per_round) == 2, lines  # one per round, not one per failed worker
    assert per_round[0].startswith(f"round 1: 3 of {WORKERS} workers without a valid reply")
    assert per_round[1].startswith(f"round 2: 2 of {WORKERS} workers without a valid reply")
    assert "first: worker" in per_round[1]
    assert not [line for line in lines if "dropped the reply" in line]


# ---- the same on Flower's simulation engine (Ray) --------------------------------------------

SLOW_WORKER, SLOW_S, RAY_TIMEOUT = 4, 5.0, 2.0


def _failing_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    """Worker RAISES fails, worker SLOW_WORKER overruns the round's timeout, every round."""
    config = msg.content.get("config")
    if isinstance(config, ConfigRecord) and "server-round" in config:
        worker = int(config.get("worker-id", -1))  # type: ignore[arg-type]
        if worker == RAISES:
            raise RuntimeError("disk full")
        if worker == SLOW_WORKER:
            time.sleep(SLOW_S)
    return call_next(msg, context)


failing_app = ClientApp(mods=[multilevel_mod, _failing_mod])
failing_app.train()(make_worker_train(load_task))


@pytest.mark.simulation
def test_ray_bulyan_finishes_with_failed_and_timed_out_workers(tmp_path, capfd):
    cfg = make_config(
        tmp_path,
        [
            "simulation.backend=ray",
            "hubs.count=1",
            f"hubs.workers={WORKERS}",
            "rounds=3",
            "tau=2",
            "strategy.name=Bulyan",
            "strategy.options.num_malicious_nodes=1",
            f"simulation.timeout={RAY_TIMEOUT}",
        ],
    )
    exp = prepare(cfg)
    outcome: dict = {}
    run_in_simulation(
        make_server_app(exp, outcome), failing_app, WORKERS, (os.cpu_count() or 1) / 2
    )
    assert "summary" in outcome, outcome.get("error")
    rounds = read_csv(tmp_path / "run" / "rounds.csv")
    assert len(rounds) == 3 and all(not row["failed_hubs"] for row in rounds)
    for row in rounds:
        assert "disk full" in row["dropped_reasons"]
    assert any("timed out" in row["dropped_reasons"] for row in rounds)
    err = capfd.readouterr().err
    assert err.count("Traceback") == 0, err[-3000:]  # no worker traceback on the console


def test_flowers_engine_logs_no_traceback_per_failed_message():
    """Flower's engine logs each failed message at ERROR (vce_api.worker, RayBackend)."""
    import importlib

    from flwr_multilevel import flower_compat
    from flwr_multilevel.flower_compat.engine import ENGINE_ERROR_LOGS

    for module, function in ENGINE_ERROR_LOGS:  # where Flower logs them still exists
        name = {
            "vce_api": flower_compat.engine.VCE_API,
            "raybackend": flower_compat.engine.RAY_BACKEND,
        }
        source = importlib.import_module(name[module])
        owner = getattr(source, "RayBackend", source)
        assert callable(getattr(owner, function))
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("flwr")
    keep = Keep()
    logger.addHandler(keep)
    try:
        with flower_compat.quiet_engine_errors():
            for module, function in [*ENGINE_ERROR_LOGS, ("hub", "aggregate_train")]:
                record = logger.makeRecord(
                    "flwr", logging.ERROR, f"/x/{module}.py", 1, module, (), None, function
                )
                logger.handle(record)
        logger.handle(
            logger.makeRecord(
                "flwr", logging.ERROR, "/x/vce_api.py", 1, "after", (), None, "worker"
            )
        )
    finally:
        logger.removeHandler(keep)
    assert seen == ["hub", "after"]


def test_a_hub_on_its_own_logs_one_line_per_round_with_failures(caplog):
    from flwr.app import Error

    from flwr_multilevel.strategies import HubStrategy, WorkerSpec

    grid = LocalGrid(client_app, 4)
    workers = {node: WorkerSpec(i, 1.0, 1.0) for i, node in enumerate(grid.contexts)}
    hub = HubStrategy(flwr_strategies.FedMedian(), 0, workers, time_steps=2)
    model = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    assert len(list(hub.configure_train(1, model, ConfigRecord(), grid))) == 4
    replies = []
    for node in workers:
        sent = Message(RecordDict(), dst_node_id=node, message_type="train")
        replies.append(Message(Error(0, "disk full"), reply_to=sent))
    caplog.set_level(logging.WARNING, logger="flwr")
    assert hub.aggregate_train(1, replies) == (None, None)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        "hub 0 round 1: 4 of 4 workers without a valid reply (4 replies dropped; first: "
        "worker 0: the worker failed: disk full); hub 0 kept its model"
    ]
