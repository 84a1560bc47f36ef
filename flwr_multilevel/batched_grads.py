"""Per-worker gradients of stacked models, all workers in one computation.

Each function takes stacked parameters ``{name: (N, ...)}``, the workers'
mini-batches ``x`` ``(N, B, ...)`` and labels ``y`` ``(N, B)``, and optional
per-example weights ``(N, B)`` (padded batches), and returns every worker's
gradient of its own cross-entropy loss (mean over its batch), stacked alike.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .errors import ConfigError
from .models import CNN, LogisticRegression

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
    """Per-worker gradients of the paper's CNN (:class:`flwr_multilevel.models.CNN`), batched.

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
