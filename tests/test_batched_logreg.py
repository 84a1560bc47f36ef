"""The fused batched logistic-regression step against a plain per-worker autograd step."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from flwr_multilevel.engines.batched_grads import logreg_chunk, logreg_sgd_step_, put_rows_
from flwr_multilevel.engines.resident import resident_copy

WORKERS, CLASSES, LR = 7, 4, 0.3


def problem(batch=5, examples=60, shape=(1, 3, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(examples, *shape, generator=gen)
    labels = torch.randint(0, CLASSES, (examples,), generator=gen)
    size = int(np.prod(shape))
    params = {
        "linear.weight": torch.randn(WORKERS, CLASSES, size, generator=gen),
        "linear.bias": torch.randn(WORKERS, CLASSES, generator=gen),
    }
    rows = torch.randint(0, examples, (WORKERS, batch), generator=gen)
    return params, features, labels, rows


def reference(params, features, labels, rows, workers, weights=None):
    """Each stepping worker: nn.Linear forward, F.cross_entropy, autograd, p -= lr * g."""
    out = {key: value.clone() for key, value in params.items()}
    for k, worker in enumerate(workers):
        weight = params["linear.weight"][worker].clone().requires_grad_(True)
        bias = params["linear.bias"][worker].clone().requires_grad_(True)
        x, y = features[rows[k]].flatten(1), labels[rows[k]]
        logits = F.linear(x, weight, bias)
        if weights is None:
            loss = F.cross_entropy(logits, y)
        else:
            loss = (F.cross_entropy(logits, y, reduction="none") * weights[k]).sum()
        grad_w, grad_b = torch.autograd.grad(loss, [weight, bias])
        with torch.no_grad():
            out["linear.weight"][worker] = weight - LR * grad_w
            out["linear.bias"][worker] = bias - LR * grad_b
    return out


def assert_close(got, expected):
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk", [None, 1, 3, 100])
def test_every_worker_steps_as_plain_autograd(chunk):
    params, features, labels, rows = problem()
    expected = reference(params, features, labels, rows, range(WORKERS))
    logreg_sgd_step_(params, features, labels, rows, None, LR, chunk=chunk)
    assert_close(params, expected)


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_only_the_given_workers_step(chunk):
    params, features, labels, rows = problem()
    workers = [0, 2, 3, 6]
    expected = reference(params, features, labels, rows[: len(workers)], workers)
    before = {key: value.clone() for key, value in params.items()}
    ids = torch.tensor(workers)
    logreg_sgd_step_(params, features, labels, rows[: len(workers)], ids, LR, chunk=chunk)
    assert_close(params, expected)
    for idle in (1, 4, 5):  # untouched, bit for bit
        for key in params:
            assert torch.equal(params[key][idle], before[key][idle])


def test_padded_batches_weigh_only_their_real_examples():
    params, features, labels, rows = problem(batch=6)
    weights = torch.zeros(WORKERS, 6)
    for k in range(WORKERS):
        real = 1 + k % 6
        weights[k, :real] = 1.0 / real
    workers = [1, 4, 5]
    sub = weights[workers]
    expected = reference(params, features, labels, rows[:3], workers, sub)
    logreg_sgd_step_(params, features, labels, rows[:3], torch.tensor(workers), LR, sub, 2)
    assert_close(params, expected)


def test_a_wrong_label_changes_the_step():
    """The one-hot term is real: flipping one label moves that worker's weights."""
    params, features, labels, rows = problem()
    other = {key: value.clone() for key, value in params.items()}
    flipped = labels.clone()
    row = int(rows[2, 0])
    flipped[row] = (flipped[row] + 1) % CLASSES
    logreg_sgd_step_(params, features, labels, rows, None, LR)
    logreg_sgd_step_(other, features, flipped, rows, None, LR)
    assert (params["linear.weight"][2] - other["linear.weight"][2]).abs().max() > 1e-3


def test_chunks_fill_about_two_mib_per_thread_on_a_cpu_only():
    features = torch.zeros(10, 784)
    assert logreg_chunk(features, 32, torch.device("cpu"), 1) == (2 << 20) // (784 * 4 * 32)
    assert logreg_chunk(features, 32, torch.device("cpu"), 2) == (4 << 20) // (784 * 4 * 32)
    assert logreg_chunk(features, 10**6, torch.device("cpu"), 1) == 1
    assert logreg_chunk(features, 32, torch.device("meta")) is None


def test_put_rows_and_resident_copy_keep_values():
    target = torch.zeros(5, 3)
    put_rows_(target, torch.tensor([4, 0]), torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert target.tolist() == [[4, 5, 6], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 2, 3]]
    strided = torch.zeros(3, 5).t()  # not contiguous: torch's index_copy_ (as on a GPU)
    put_rows_(strided, torch.tensor([4, 0]), torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    assert torch.equal(strided, target)
    big = torch.randn(3000, 1, 28, 28)  # over one huge page
    copy = resident_copy(big, torch.device("cpu"))
    assert torch.equal(copy, big) and copy.is_contiguous()
    copy[0] = 0.0
    assert not torch.equal(copy, big)  # its own memory


def test_hub_averages_by_slices_equal_the_dense_product(tmp_path):
    """The CPU's sliced float64 hub sums equal ``A @ x`` (the GPU's dense product)."""
    from flwr_multilevel.clients.worker import step_schedule
    from flwr_multilevel.engines.batched_hubs import AVERAGE_SLICE, mix
    from flwr_multilevel.engines.batched_mllsgd import BatchedMLLSGD
    from flwr_multilevel.experiment.models import build_model
    from flwr_multilevel.experiment.prepare import prepare

    from .conftest import make_config

    workers = AVERAGE_SLICE + 6  # two slices, the second partial
    exp = prepare(
        make_config(
            tmp_path, ["hubs.count=2", f"hubs.workers=[{workers - 10},10]", "weighting=data_size"]
        )
    )
    data = exp.dataset
    runner = BatchedMLLSGD(
        build_model("logreg", data.input_shape, data.num_classes),
        data.x_train,
        data.y_train,
        exp.partitions,
        exp.hierarchy,
        exp.mixing,
        tau=1,
        q=1,
        lr=0.1,
        batch_size=8,
        seed=0,
        schedule=step_schedule,
    )
    gen = torch.Generator().manual_seed(1)
    stacked = {
        "linear.weight": torch.randn(workers, 10, 64, generator=gen),
        "linear.bias": torch.randn(workers, 10, generator=gen),
    }
    dense = mix(runner.average, stacked)
    sliced = runner._average(stacked)  # pylint: disable=protected-access
    for key, value in dense.items():
        torch.testing.assert_close(sliced[key], value, rtol=0, atol=1e-6)
    hub0 = exp.hierarchy.v[: workers - 10].astype(np.float64)
    expected = (hub0[:, None] * stacked["linear.bias"][: workers - 10].double().numpy()).sum(0)
    np.testing.assert_allclose(sliced["linear.bias"][0].numpy(), expected, rtol=0, atol=1e-6)
