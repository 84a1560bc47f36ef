"""Per-worker gradients of stacked models, all workers in one computation.

Each function takes stacked parameters ``{name: (N, ...)}``, the workers'
mini-batches ``x`` ``(N, B, ...)`` and labels ``y`` ``(N, B)``, and optional
per-example weights ``(N, B)`` (padded batches), and returns every worker's
gradient of its own cross-entropy loss (mean over its batch), stacked alike.

For logistic regression :func:`logreg_sgd_step_` takes the whole SGD step in
place instead: it gathers the mini-batches from the resident training set a
cache-sized chunk of workers at a time and fuses the update into the
backward product (the path :class:`flwr_multilevel.engines.batched_mllsgd.BatchedMLLSGD`
takes for logreg).
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.models import CNN, LogisticRegression

Params = dict[str, torch.Tensor]
GradFn = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], Params]


def logreg_grads(
    params: Params, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
) -> Params:
    """Per-worker cross-entropy gradients of multinomial logistic regression, batched.

    ``params`` holds ``linear.weight`` ``(N, C, F)`` and ``linear.bias``
    ``(N, C)``; ``x`` is ``(N, B, ...)``, ``y`` ``(N, B)``. The gradient of
    the mean loss is ``(softmax - onehot)^T x / B`` (weighted by ``weights``
    when batches are padded), computed with two batched matrix products.
    """
    weight, bias = params["linear.weight"], params["linear.bias"]
    inputs = x.reshape(x.shape[0], x.shape[1], -1)
    logits = torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))
    residual = torch.softmax(logits, dim=2)
    residual.scatter_add_(2, y.unsqueeze(2), torch.full_like(residual[..., :1], -1.0))
    if weights is None:
        residual.mul_(1.0 / x.shape[1])
    else:
        residual.mul_(weights.unsqueeze(2))
    return {
        "linear.weight": torch.bmm(residual.transpose(1, 2), inputs),
        "linear.bias": residual.sum(dim=1),
    }


def logreg_chunk(
    features: torch.Tensor, batch_size: int, device: torch.device, threads: int | None = None
) -> int | None:
    """Return how many workers :func:`logreg_sgd_step_` takes at once, or None for all.

    On a CPU, chunks whose gathered mini-batches fill about ``CHUNK_BYTES``
    per torch thread keep them in cache between the forward and the backward
    product; a GPU takes everyone in one launch.

    Parameters
    ----------
    features : torch.Tensor
        The resident training rows ``(M, ...)``.
    batch_size : int
        Rows per worker and step.
    device : torch.device
        Where the step runs.
    threads : int | None (default: None)
        Torch threads; None: ``torch.get_num_threads()``.

    Examples
    --------
    >>> logreg_chunk(torch.zeros(5, 784), 32, torch.device("cpu"), 1)  # 2 MiB / 100 kB
    20
    >>> logreg_chunk(torch.zeros(5, 784), 32, torch.device("meta")) is None
    True
    """
    if device.type != "cpu":
        return None
    threads = torch.get_num_threads() if threads is None else threads
    row_bytes = features[0].numel() * features.element_size() * batch_size
    return max(1, CHUNK_BYTES * max(1, threads) // max(1, row_bytes))


CHUNK_BYTES = 2 << 20


def logreg_sgd_step_(  # pylint: disable=too-many-arguments,too-many-locals
    params: Params,
    features: torch.Tensor,
    labels: torch.Tensor,
    rows: torch.Tensor,
    workers: torch.Tensor | None,
    lr: float,
    weights: torch.Tensor | None = None,
    chunk: int | None = None,
) -> None:
    """Take one SGD step of logistic regression for the given workers, in place.

    Worker ``workers[k]`` (or worker k when ``workers`` is None: all of them,
    in order) updates its own ``linear.weight`` ``(N, C, F)`` and
    ``linear.bias`` ``(N, C)`` with the gradient of its mean cross-entropy
    over the examples ``features[rows[k]]`` (weighted by ``weights[k]`` when
    given), as :func:`logreg_grads` computes it. The mini-batches are gathered
    from the resident ``features`` ``(M, ...)`` ``chunk`` workers at a time
    (:func:`logreg_chunk`) into one reused buffer, and the update is fused
    into the backward product (``W <- W - lr * R^T X``).

    Parameters
    ----------
    params : dict[str, torch.Tensor]
        The stacked models of all N workers; updated in place.
    features, labels : torch.Tensor
        The resident training rows ``(M, ...)`` and their classes ``(M,)``.
    rows : torch.Tensor
        ``(K, B)`` int64: the global rows of each stepping worker's batch.
    workers : torch.Tensor | None
        ``(K,)`` int64 ids of the stepping workers, distinct; None when all
        N step (``K == N``).
    lr : float
        Step size.
    weights : torch.Tensor | None (default: None)
        ``(K, B)`` per-example loss weights (padded batches); None: ``1 / B``.
    chunk : int | None (default: None)
        Workers per gather; None: all K at once.

    Examples
    --------
    >>> params = {"linear.weight": torch.zeros(2, 3, 4), "linear.bias": torch.zeros(2, 3)}
    >>> x, y = torch.eye(4), torch.tensor([0, 1, 2, 0])
    >>> logreg_sgd_step_(params, x, y, torch.tensor([[0, 1]]), torch.tensor([1]), 0.5)
    >>> params["linear.bias"][0].tolist(), params["linear.bias"][1].abs().sum().item() > 0
    ([0.0, 0.0, 0.0], True)
    """
    weight, bias = params["linear.weight"], params["linear.bias"]
    flat = features.reshape(features.shape[0], -1)
    count, batch = rows.shape
    step = count if chunk is None else max(1, min(chunk, count))
    buffer = flat.new_empty(step * batch, flat.shape[1])
    targets = labels.index_select(0, rows.reshape(-1)).view(count, 1, batch)
    for start in range(0, count, step):
        stop = min(start + step, count)
        size = stop - start
        inputs = torch.index_select(
            flat, 0, rows[start:stop].reshape(-1), out=buffer[: size * batch]
        ).view(size, batch, -1)
        ids = None if workers is None else workers[start:stop]
        if ids is None:
            w, b = weight[start:stop], bias[start:stop]  # views: updated in place
        else:  # this chunk's models, compacted while in cache, put back below
            w, b = weight.index_select(0, ids), bias.index_select(0, ids)
        # classes x examples: W X^T is the faster product on CPUs
        residual = torch.baddbmm(b.unsqueeze(2), w, inputs.transpose(1, 2)).softmax(dim=1)
        residual.scatter_add_(1, targets[start:stop], _minus_ones(residual, size, batch))
        if weights is None:
            residual.mul_(1.0 / batch)
        else:
            residual.mul_(weights[start:stop].unsqueeze(1))
        w.baddbmm_(residual, inputs, alpha=-lr)
        b.sub_(residual.sum(dim=2), alpha=lr)
        if ids is not None:
            put_rows_(weight, ids, w)
            put_rows_(bias, ids, b)


def put_rows_(target: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """Set ``target[index] = values`` along dim 0, in place (numpy's copy on a CPU: faster).

    Examples
    --------
    >>> t = torch.zeros(4, 2)
    >>> put_rows_(t, torch.tensor([3, 1]), torch.ones(2, 2))
    >>> t.sum(dim=1).tolist()
    [0.0, 2.0, 0.0, 2.0]
    """
    if target.device.type == "cpu" and target.is_contiguous() and not target.requires_grad:
        target.numpy()[index.numpy()] = values.numpy()
    else:
        target.index_copy_(0, index, values)


def _minus_ones(like: torch.Tensor, size: int, batch: int) -> torch.Tensor:
    return like.new_full((1, 1, 1), -1.0).expand(size, 1, batch)


def vmap_grads(model: nn.Module) -> GradFn:
    """Return a batched gradient function of ``model``: ``torch.func`` vmap of grad.

    Each worker's gradient is that of ``F.cross_entropy(model(x_i), y_i)``
    (mean over its batch, or weighted by its example weights) with respect to
    its own parameters.
    """

    def mean_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    def weighted_loss(
        params: Params, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        logits = functional_call(model, params, (x,))
        return (F.cross_entropy(logits, y, reduction="none") * w).sum()

    mean_grad, weighted_grad = vmap(grad(mean_loss)), vmap(grad(weighted_loss))

    def grads(
        params: Params, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
    ) -> Params:
        if weights is None:
            return mean_grad(params, x, y)  # type: ignore[no-any-return]
        return weighted_grad(params, x, y, weights)  # type: ignore[no-any-return]

    return grads


def _grouped_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Convolve ``h`` ``(B, N * C, H, W)`` with each worker's own 'same'-padded kernels."""
    workers, out = weight.shape[0], weight.shape[1]
    return F.conv2d(
        h,
        weight.reshape(workers * out, *weight.shape[2:]),
        bias.reshape(workers * out),
        padding=weight.shape[-1] // 2,
        groups=workers,
    )


def cnn_grads(
    params: Params, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
) -> Params:
    """Per-worker gradients of the paper's CNN (:class:`~flwr_multilevel.experiment.models.CNN`).

    The convolutions of all workers run as one grouped convolution on a
    ``(B, N * channels, H, W)`` layout, the dense layers as batched matrix
    products; one backward pass gives every worker's gradient of its own
    mean (or weighted) loss, since the workers share no parameter.
    """
    leaves = {key: value.detach().requires_grad_(True) for key, value in params.items()}
    workers, batch = x.shape[0], x.shape[1]
    with torch.enable_grad():
        h = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
        h = F.max_pool2d(
            F.relu(_grouped_conv(h, leaves["features.0.weight"], leaves["features.0.bias"])), 2
        )
        h = F.max_pool2d(
            F.relu(_grouped_conv(h, leaves["features.3.weight"], leaves["features.3.bias"])), 2
        )
        h = h.reshape(batch, workers, -1).transpose(0, 1)
        w1, b1 = leaves["classifier.1.weight"], leaves["classifier.1.bias"]
        h = F.relu(torch.baddbmm(b1.unsqueeze(1), h, w1.transpose(1, 2)))
        w2, b2 = leaves["classifier.3.weight"], leaves["classifier.3.bias"]
        logits = torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))
        losses = F.cross_entropy(
            logits.reshape(workers * batch, -1), y.reshape(-1), reduction="none"
        )
        losses = losses.view(workers, batch)
        total = losses.mean(dim=1).sum() if weights is None else (losses * weights).sum()
        grads = torch.autograd.grad(total, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


GRADIENTS = ("auto", "logreg", "cnn", "vmap")


def gradient_function(model: nn.Module, method: str = "auto") -> GradFn:
    """Return the batched gradient function of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The model every worker trains.
    method : str (default: "auto")
        ``logreg`` (:func:`logreg_grads`), ``cnn`` (:func:`cnn_grads`),
        ``vmap`` (:func:`vmap_grads`, any model without buffers) or ``auto``
        (the hand-written one for the paper's models, else vmap).

    Raises
    ------
    ConfigError
        ``simulation.gradients``: an unknown method or one that does not fit the model.
    """
    if method == "auto":
        method = {LogisticRegression: "logreg", CNN: "cnn"}.get(type(model), "vmap")
    if method == "vmap":
        return vmap_grads(model)
    fits = {"logreg": LogisticRegression, "cnn": CNN}
    if method not in fits:
        raise ConfigError(
            "simulation.gradients", f"expected one of {', '.join(GRADIENTS)}, got {method!r}"
        )
    if type(model) is not fits[method]:  # pylint: disable=unidiomatic-typecheck
        raise ConfigError(
            "simulation.gradients", f"{method!r} does not fit a {type(model).__name__}"
        )
    return logreg_grads if method == "logreg" else cnn_grads
