"""Byte counts per level against the arrays' real serialized size."""

import io

import numpy as np
from flwr.app import ArrayRecord
from flwr.common.serde import array_record_to_proto

from flwr_multilevel.engines.launch import launch
from flwr_multilevel.experiment.prepare import initial_model, prepare
from flwr_multilevel.protocol.arrays import record_bytes

from .helpers import read_csv, run_engine


def npy_size(array: np.ndarray) -> int:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return len(buffer.getvalue())


def test_record_bytes_is_the_npy_payload_and_close_to_the_wire_size(config):
    exp = prepare(config("model.name=cnn"))
    record = initial_model(exp)
    state = record.to_torch_state_dict()
    expected = sum(npy_size(t.numpy()) for t in state.values())
    assert record_bytes(record) == expected
    wire = array_record_to_proto(record).ByteSize()
    # protobuf adds keys, dtype and shape strings and framing: a few bytes per array
    assert expected < wire < expected + 100 * len(state)


def test_record_bytes_scales_with_dtype_and_size():
    small = ArrayRecord([np.zeros(100, dtype=np.float32)])
    large = ArrayRecord([np.zeros(1000, dtype=np.float64)])
    header = npy_size(np.zeros(0, dtype=np.float32))
    assert record_bytes(small) - header == 400
    assert record_bytes(large) - npy_size(np.zeros(0)) == 8000


def test_round_bytes_per_level(config):
    cfg = config("hubs.count=3", "hubs.workers=2", "hubs.graph=path", "rounds=4", "q=2")
    reports = []
    exp, _ = run_engine(cfg, on_round=lambda report, models: reports.append(report))
    model = record_bytes(initial_model(exp))
    workers = exp.hierarchy.num_workers
    links = int(np.count_nonzero(exp.mixing - np.diag(np.diag(exp.mixing))))
    assert links == 4  # path 0-1-2: each edge carries a model both ways
    for report in reports:
        assert report.bytes_down == workers * model
        assert report.bytes_up == workers * model
        assert report.bytes_hubs == (links * model if report.server_round % 2 == 0 else 0)


def test_results_folder_accumulates_slots_and_bytes(config):
    cfg = config(
        "hubs.count=2", "hubs.workers=2", "rounds=6", "q=2", "tau=2", "eval.every=4",
        "wait_for_slowest=true", "rates.low=0.4",
    )  # fmt: skip
    exp = prepare(cfg)
    summary = launch(exp)
    rounds = read_csv(exp.output_dir / "rounds.csv")
    history = read_csv(exp.output_dir / "history.csv")
    # evaluated at time step 0, every 4 time steps (every 2 rounds) and at the end
    assert [int(r["time_step"]) for r in history] == [0, 4, 8, 12]
    slots = np.cumsum([int(r["slots"]) for r in rounds])
    wire = np.cumsum([int(r["bytes_down"]) + int(r["bytes_up"]) for r in rounds])
    hubs = np.cumsum([int(r["bytes_hubs"]) for r in rounds])
    for row in history[1:]:
        k = int(row["round"]) - 1
        assert int(row["time_slot"]) == slots[k] == int(rounds[k]["time_slot"])
        assert int(row["bytes_worker_hub"]) == wire[k]
        assert int(row["bytes_hub_hub"]) == hubs[k]
    assert summary["time_slot"] == slots[-1] > 6 * 2  # slow workers made every round wait
    assert summary["steps_taken"] == 6 * 2 * 4  # ... and everyone took exactly tau steps


def test_max_time_slots_stops_the_run(config):
    cfg = config("rounds=50", "tau=2", "max_time_slots=7", "eval.every=100")
    summary = launch(prepare(cfg))
    assert summary["round"] == 4 and summary["time_slot"] == 8
