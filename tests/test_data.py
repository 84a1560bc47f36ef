"""Partitions (the paper's and flwr-datasets' non-IID ones), data sets and models."""

import numpy as np
import pytest
import torch

from flwr_multilevel import ConfigError
from flwr_multilevel.experiment.data import label_counts, load_dataset, partition
from flwr_multilevel.experiment.models import build_model
from flwr_multilevel.experiment.prepare import prepare

from .helpers import run_engine

LABELS = load_dataset("digits").y_train.numpy()


def assert_disjoint_cover(parts, n, allow_dropped=0):
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))  # disjoint
    assert n - allow_dropped <= len(joined) <= n
    assert all(len(p) > 0 and np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize("scheme", ["iid", "unequal", "dirichlet", "shards"])
def test_partitions_are_disjoint_seeded_and_reproducible(scheme):
    parts = partition(LABELS, 12, scheme, 0)
    # shards drops the incomplete last shard: fewer than one shard of examples
    assert_disjoint_cover(parts, len(LABELS), allow_dropped=len(LABELS) // 24)
    again = partition(LABELS, 12, scheme, 0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition(LABELS, 12, scheme, 1)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_and_unequal_ignore_labels():
    """The paper's splits depend only on the number of examples (unchanged by this issue)."""
    for scheme in ("iid", "unequal"):
        a = partition(LABELS, 10, scheme, 3)
        b = partition(np.zeros_like(LABELS), 10, scheme, 3)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def skew(parts):
    """Mean total-variation distance between each worker's label mix and the global one."""
    counts = label_counts(LABELS, parts, 10).astype(float)
    local = counts / counts.sum(axis=1, keepdims=True)
    overall = np.bincount(LABELS, minlength=10) / len(LABELS)
    return float(np.abs(local - overall).sum(axis=1).mean() / 2)


def test_dirichlet_alpha_controls_label_skew():
    iid = skew(partition(LABELS, 12, "iid", 0))
    skews = [skew(partition(LABELS, 12, "dirichlet", 0, alpha=a)) for a in (100.0, 1.0, 0.1)]
    assert iid < 0.15
    assert skews[0] < skews[1] < skews[2]
    assert skews[2] > 0.5


def test_shards_give_each_worker_few_labels():
    parts = partition(LABELS, 12, "shards", 0, shards_per_worker=2)
    counts = label_counts(LABELS, parts, 10)
    # two label-sorted shards span at most 2 labels each
    assert (counts > 0).sum(axis=1).max() <= 4
    assert skew(parts) > 0.5


def test_label_counts_match_bincount():
    parts = partition(LABELS, 5, "dirichlet", 2, alpha=0.5)
    counts = label_counts(LABELS, parts, 10)
    for i, part in enumerate(parts):
        assert counts[i].tolist() == np.bincount(LABELS[part], minlength=10).tolist()
    assert counts.sum() == len(LABELS)


def test_bad_partition_settings_are_one_line_errors(config):
    with pytest.raises(ConfigError, match="data.partition"):
        partition(LABELS, 4, "pathological", 0)
    with pytest.raises(ConfigError, match="hubs.workers"):
        partition(LABELS[:5], 6, "dirichlet", 0)
    with pytest.raises(ConfigError, match="data.shards_per_worker"):
        prepare(config("data.partition=shards", "data.shards_per_worker=400"))
    with pytest.raises(ConfigError, match="data.alpha"):
        config("data.alpha=0")


def test_non_iid_run_trains_each_worker_on_its_partition(config):
    cfg = config(
        "data.partition=dirichlet", "data.alpha=0.3", "hubs.count=2", "hubs.workers=3", "rounds=2"
    )
    exp, models = run_engine(cfg)
    parts = partition(LABELS, 6, "dirichlet", cfg.seed, alpha=0.3)
    assert all(np.array_equal(a, b) for a, b in zip(exp.partitions, parts, strict=True))
    # data-size weights follow the flwr-datasets partition sizes
    assert exp.hierarchy.weights.tolist() == [float(len(p)) for p in parts]
    assert all(np.isfinite(m).all() for model in models for m in model)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [("logreg", (1, 28, 28), 26), ("cnn", (1, 28, 28), 26), ("resnet18", (3, 32, 32), 10)],
)
def test_models_for_every_data_set_shape(name, shape, classes):
    model = build_model(name, shape, classes)
    out = model.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, classes)


def test_resnet_rejects_tiny_inputs():
    with pytest.raises(ConfigError, match="model.name"):
        build_model("resnet18", (1, 4, 4), 10)


def test_offline_torchvision_sets_fail_with_a_named_error(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))


def test_cuda_without_a_gpu_is_a_named_error(config):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="^simulation.device: "):
        prepare(config("simulation.device=cuda"))
    assert prepare(config("simulation.device=auto")).hierarchy.num_workers == 12


def test_train_loss_on_a_fixed_sample_and_hub_scores_off(config):
    from flwr_multilevel.experiment.prepare import initial_model
    from flwr_multilevel.run.evaluate import Evaluator

    exp = prepare(config("eval.train_examples=100", "eval.hubs=false"))
    evaluate = Evaluator(exp)
    assert len(evaluate.y_train) == 100
    assert np.array_equal(evaluate.y_train.numpy(), Evaluator(exp).y_train.numpy())  # fixed
    row = evaluate([initial_model(exp)] * exp.hierarchy.num_hubs)
    assert "hub0_accuracy" not in row and 0 < row["loss"] < 10
    full = Evaluator(prepare(config("eval.hubs=true")))
    row = full([initial_model(exp)] * exp.hierarchy.num_hubs)
    assert row["hub0_accuracy"] == row["accuracy"]  # identical hubs: scored once
