"""The engine's fast paths give exactly what Flower's own calls give."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import (
    aggregate_arrayrecords,
    aggregate_metricrecords,
)

from flwr_multilevel.clients.worker import load_arrays, reply_arrays
from flwr_multilevel.experiment.models import build_model
from flwr_multilevel.protocol.codec import DecodedArray, array_record, decode, encode
from flwr_multilevel.strategies.hub_average import fedavg_arrays, is_plain_fedavg
from flwr_multilevel.strategies.hub_metrics import weighted_metrics
from flwr_multilevel.strategies.records import with_entries
from flwr_multilevel.strategies.replies import check_array

RNG = np.random.default_rng(0)
ARRAYS = [
    RNG.random((5, 7)).astype(np.float32),
    RNG.random(3),
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.array(2.5, dtype=np.float32),
    np.zeros((0, 3), dtype=np.float32),
    np.array([True, False]),
    np.zeros((2, 2), dtype=">f4"),
    np.asfortranarray(RNG.random((4, 3))),
    RNG.random((4, 6))[:, ::2],
]


@pytest.mark.parametrize("values", ARRAYS, ids=range(len(ARRAYS)))
def test_encode_writes_np_save_bytes_and_decode_reads_them(values: np.ndarray) -> None:
    flower = Array(values)
    ours = encode(values)
    assert (ours.data, ours.dtype, ours.shape, ours.stype) == (
        flower.data,
        flower.dtype,
        flower.shape,
        flower.stype,
    )
    decoded = decode(flower, tuple(values.shape), flower.dtype)
    assert decoded.dtype == values.dtype and decoded.shape == values.shape
    assert np.array_equal(decoded, values)
    assert not decoded.flags.writeable


def test_a_payload_that_lies_about_its_shape_takes_flowers_path_and_is_refused() -> None:
    liar = Array(np.zeros(6, np.float32))
    liar.__dict__["shape"] = (2, 3)  # declares (2, 3), holds (6,)
    assert decode(liar, (2, 3), "float32").shape == (6,)  # what np.load says
    assert "payload holds shape (6,)" in str(check_array("w", liar, (2, 3), "float32"))
    truncated = Array(np.zeros((2, 3), np.float32))
    truncated.__dict__["data"] = truncated.data[:-4]
    assert "does not decode" in str(check_array("w", truncated, (2, 3), "float32"))


def test_decoded_array_hands_out_fresh_copies() -> None:
    values = RNG.random(4).astype(np.float32)
    wrapped = DecodedArray.wrap(Array(values), decode(Array(values), (4,), "float32"))
    first = wrapped.numpy()
    first[:] = 0
    assert np.array_equal(wrapped.numpy(), values)
    record = array_record([("w", wrapped)])
    assert record["w"] is wrapped


@pytest.mark.parametrize("name", ["logreg", "cnn"])
def test_worker_load_and_reply_match_flowers_state_dict_path(name: str) -> None:
    torch.manual_seed(0)
    source, ours, theirs = (build_model(name, (1, 8, 8), 10) for _ in range(3))
    arrays = ArrayRecord(source.state_dict())
    load_arrays(ours, arrays)
    theirs.load_state_dict(arrays.to_torch_state_dict())
    expected = theirs.state_dict()
    assert list(ours.state_dict()) == list(expected)
    for key, tensor in ours.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    mine, flower = reply_arrays(ours), ArrayRecord(ours.state_dict())
    assert list(mine.keys()) == list(flower.keys())
    assert all(mine[k].data == flower[k].data for k in flower.keys())


def test_worker_load_refuses_a_foreign_layout_as_load_state_dict_does() -> None:
    model = build_model("logreg", (1, 8, 8), 10)
    with pytest.raises(RuntimeError):
        load_arrays(model, ArrayRecord({"linear.weight": Array(np.zeros((2, 2), np.float32))}))


def test_fedavg_arrays_is_flowers_aggregate_bit_for_bit() -> None:
    records, inputs = [], []
    for weight in (1.0, 7.0, 3.5, 0.25):
        values: dict[str, np.ndarray] = {
            "w": RNG.random((3, 5)).astype(np.float32),
            "b": RNG.random(5),
        }
        records.append(
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in values.items()}),
                    "metrics": MetricRecord({"worker-weight": weight}),
                }
            )
        )
        inputs.append((values, weight))
    flower = aggregate_arrayrecords(records, "worker-weight")
    ours = fedavg_arrays(inputs)
    for key in flower.keys():
        assert encode(np.asarray(ours[key])).data == flower[key].data


def test_only_stock_fedavg_and_fedprox_take_the_direct_average() -> None:
    assert is_plain_fedavg(FedAvg()) and is_plain_fedavg(FedProx(proximal_mu=0.1))
    assert not is_plain_fedavg(FedAdam())
    assert not is_plain_fedavg(FedAvg(train_metrics_aggr_fn=lambda r, k: MetricRecord()))

    class Custom(FedAvg):
        pass

    assert not is_plain_fedavg(Custom())


def test_weighted_metrics_equal_flowers_aggregate() -> None:
    records = [MetricRecord({"loss": float(x), "acc": float(x) / 3}) for x in RNG.random(7)]
    weights = [float(w) for w in RNG.random(7) * 10]
    ours = weighted_metrics(records, weights)
    flower = aggregate_metricrecords(
        [
            RecordDict({"m": MetricRecord({**dict(r.items()), "worker-weight": w})})
            for r, w in zip(records, weights, strict=True)
        ],
        "worker-weight",
    )
    assert dict(ours) == {k: flower[k] for k in ours}


def test_with_entries_copies_and_checks_only_the_new_entries() -> None:
    base = ConfigRecord({"lr": 0.1, "name": "x", "sizes": [1, 2]})
    copy = with_entries(base, {"worker-id": 3})
    assert dict(copy) == {"lr": 0.1, "name": "x", "sizes": [1, 2], "worker-id": 3}
    assert "worker-id" not in base
    with pytest.raises(TypeError):
        with_entries(base, {"bad": object()})
