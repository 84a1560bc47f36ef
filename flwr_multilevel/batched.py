"""Batched simulation of MLL-SGD: every worker of the run advances in one vectorised step.

The message-based engine (:class:`flwr_multilevel.strategies.MLLSGD` and its
ClientApp) runs Algorithm 1 worker by worker. This path runs the same
algorithm with the same draws on stacked per-worker parameters: at each time
step the workers whose coin came up take one SGD step together (a hand-written
batched gradient for logistic regression, ``torch.func`` ``vmap(grad(...))``
for other models), then every hub averages ``z_d = sum_i v_i x_i`` and every
q rounds the hubs mix ``y_d = sum_j H[j, d] z_j``, all as matrix products.

Coins and mini-batches come from the worker's own
``step_schedule(seed, round, worker, tau, rate, n_i, batch_size)``, so both
paths draw the same numbers; a worker with fewer examples than the batch size
uses all of them (the mean loss is then over ``n_i`` examples).

The core (:class:`BatchedMLLSGD`) needs only torch and numpy; :func:`simulate`
adds the experiment glue (Flower's ``ArrayRecord`` and the worker's draws).
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, overload

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .errors import ConfigError
from .hierarchy import Hierarchy
from .models import CNN, LogisticRegression, build_model, resolve_device

if TYPE_CHECKING:  # only for annotations: the core runs without Flower
    from flwr.app import ArrayRecord

    from .experiment import Experiment

Params = dict[str, torch.Tensor]
# step_schedule(seed, round, worker, tau, rate, n_i, batch_size) -> (coins, batches)
ScheduleFn = Callable[[int, int, int, int, float, int, int], tuple[np.ndarray, np.ndarray]]
GradFn = Callable[[Params, torch.Tensor, torch.Tensor, torch.Tensor | None], Params]


class RoundDraws(NamedTuple):
    """One round's draws of every worker, ready for the batched steps.

    Attributes
    ----------
    steps : numpy.ndarray
        Steps each worker takes this round (``(N,)`` int64).
    active : numpy.ndarray
        Concatenated over time steps: the workers stepping at each (int64).
    rows : numpy.ndarray
        One row per entry of ``active``: the global example rows of its
        mini-batch, padded to the longest batch (``(len(active), B)`` int64).
    counts : list[int]
        How many workers step at each time step (``len == tau``).
    """

    steps: np.ndarray
    active: np.ndarray
    rows: np.ndarray
    counts: list[int]


def round_draws(  # pylint: disable=too-many-arguments
    schedule: ScheduleFn,
    seed: int,
    server_round: int,
    rates: np.ndarray,
    sizes: np.ndarray,
    time_steps: int,
    batch_size: int,
) -> RoundDraws:
    """Return every worker's coins and mini-batches of one round, in batched form.

    Worker i's local example j is global row ``offset_i + j`` with offsets the
    cumulative ``sizes`` (workers' data stored one after the other).

    Examples
    --------
    >>> sched = lambda s, r, w, t, p, n, b: (np.array([w == 0, True]), np.zeros((2, b), int))
    >>> d = round_draws(sched, 0, 1, np.ones(2), np.array([3, 4]), 2, 2)
    >>> d.steps.tolist(), d.active.tolist(), d.counts, d.rows.tolist()
    ([2, 1], [0, 0, 1], [1, 2], [[0, 0], [0, 0], [3, 3]])
    """
    num_workers = len(sizes)
    width = int(min(batch_size, int(sizes.max())))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    coins = np.zeros((time_steps, num_workers), dtype=bool)
    rows = np.empty((time_steps, num_workers, width), dtype=np.int64)
    for worker in range(num_workers):
        take, batches = schedule(
            seed,
            server_round,
            worker,
            time_steps,
            float(rates[worker]),
            int(sizes[worker]),
            batch_size,
        )
        coins[:, worker] = take
        local = rows[:, worker, :]
        local[:, : batches.shape[1]] = batches + offsets[worker]
        local[:, batches.shape[1] :] = offsets[worker]  # padding, weight 0
    active_t, active_w = np.nonzero(coins)  # ordered by time step, then worker
    counts = np.bincount(active_t, minlength=time_steps).tolist()
    return RoundDraws(
        coins.sum(axis=0).astype(np.int64), active_w, rows[active_t, active_w], counts
    )


def example_weights(sizes: np.ndarray, batch_size: int) -> np.ndarray | None:
    """Return per-example loss weights ``(N, B)``, or None when every batch is full.

    A worker with ``n_i < batch_size`` has a batch of ``n_i`` examples padded to
    the common width B; its real examples weigh ``1 / n_i``, the padding 0.

    Examples
    --------
    >>> example_weights(np.array([5, 9]), 4) is None
    True
    >>> example_weights(np.array([2, 9]), 4).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]
    """
    batch = np.minimum(sizes, batch_size)
    width = int(batch.max())
    if np.all(batch == width):
        return None
    cols = np.arange(width)[None, :]
    return np.where(cols < batch[:, None], 1.0 / batch[:, None], 0.0).astype(np.float32)


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


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


class BatchedMLLSGD:  # pylint: disable=too-many-instance-attributes
    """MLL-SGD on stacked per-worker parameters; needs torch and numpy only.

    Parameters
    ----------
    model : torch.nn.Module
        A model without buffers (its architecture; the weights come from
        :meth:`run`).
    features, labels : torch.Tensor
        The training set (``labels`` int64).
    partitions : Sequence[numpy.ndarray]
        Example indices of each worker (its local data, in order).
    hierarchy : Hierarchy
        Hubs, weights ``v_i`` and rates ``p_i``.
    mixing : numpy.ndarray
        The ``D x D`` mixing matrix H.
    tau, q : int
        Time steps per round; rounds between gossips.
    lr : float
        SGD step size.
    batch_size : int
        Mini-batch size (capped at each worker's data).
    seed : int
        Experiment seed of the draws.
    schedule : ScheduleFn
        The worker's draws: ``clients.worker.step_schedule``.
    wait_for_slowest : bool (default: False)
        Every worker is told rate 1 (takes tau steps).
    device : str | torch.device (default: "cpu")
        Where the workers train.
    gradients : str (default: "auto")
        How the batched gradients are computed (:func:`gradient_function`).

    Raises
    ------
    ConfigError
        ``model.name``: a model with buffers (BatchNorm's running statistics).
    """

    def __init__(  # pylint: disable=too-many-arguments,too-many-locals
        self,
        model: nn.Module,
        features: torch.Tensor,
        labels: torch.Tensor,
        partitions: Sequence[np.ndarray],
        hierarchy: Hierarchy,
        mixing: np.ndarray,
        *,
        tau: int,
        q: int,
        lr: float,
        batch_size: int,
        seed: int,
        schedule: ScheduleFn,
        wait_for_slowest: bool = False,
        device: str | torch.device = "cpu",
        gradients: str = "auto",
    ) -> None:
        if any(True for _ in model.buffers()):
            raise ConfigError(
                "model.name",
                f"the batched backend trains models without buffers (logreg, cnn), got "
                f"{type(model).__name__}",
            )
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.tau, self.q, self.lr, self.batch_size, self.seed = tau, q, lr, batch_size, seed
        self.schedule = schedule
        self.rates = np.ones(hierarchy.num_workers) if wait_for_slowest else hierarchy.rates
        self.sizes = np.array([len(p) for p in partitions], dtype=np.int64)
        order = torch.from_numpy(np.concatenate(partitions).astype(np.int64))
        self.features = features[order].to(self.device).contiguous()
        self.labels = labels[order].to(self.device).contiguous()
        weights = example_weights(self.sizes, batch_size)
        self.weights = None if weights is None else torch.from_numpy(weights).to(self.device)
        hub_of = torch.from_numpy(hierarchy.hub_of.astype(np.int64))
        self.hub_of = hub_of.to(self.device)
        average = np.zeros((hierarchy.num_hubs, hierarchy.num_workers))
        average[hierarchy.hub_of, np.arange(hierarchy.num_workers)] = hierarchy.v
        self.average = torch.from_numpy(average).to(self.device)  # z = A x
        self.mix_t = torch.from_numpy(np.asarray(mixing, dtype=np.float64).T.copy()).to(
            self.device
        )  # y = H^T z
        self.grads = gradient_function(self.model, gradients)

    def draws(self, server_round: int) -> RoundDraws:
        """Return the draws of every worker for ``server_round``."""
        return round_draws(
            self.schedule,
            self.seed,
            server_round,
            self.rates,
            self.sizes,
            self.tau,
            self.batch_size,
        )

    def _steps(self, x: Params, draws: RoundDraws) -> None:
        """Run the tau time steps in place on the stacked worker models ``x``."""
        num_workers = len(self.sizes)
        active = _to_device(draws.active, self.device)
        rows = _to_device(draws.rows, self.device)
        start = 0
        for count in draws.counts:
            if count == 0:
                continue
            stop = start + count
            batch = rows[start:stop]
            inputs, targets = self.features[batch], self.labels[batch]
            if count == num_workers:  # everyone steps: update in place
                weights = self.weights
                grads = self.grads(x, inputs, targets, weights)
                for key, value in x.items():
                    value.sub_(self.lr * grads[key])
            else:  # only the workers whose coin came up
                sel = active[start:stop]
                weights = None if self.weights is None else self.weights.index_select(0, sel)
                sub = {key: value.index_select(0, sel) for key, value in x.items()}
                grads = self.grads(sub, inputs, targets, weights)
                for key, value in x.items():
                    value.index_copy_(0, sel, sub[key] - self.lr * grads[key])
            start = stop

    def _mix(self, matrix: torch.Tensor, stacked: Params) -> Params:
        """Return ``matrix @ stacked`` per array, in float64, cast back to each dtype."""
        out = {}
        for key, value in stacked.items():
            flat = value.reshape(value.shape[0], -1).to(torch.float64)
            mixed = (matrix @ flat).to(value.dtype)
            out[key] = mixed.reshape(matrix.shape[0], *value.shape[1:])
        return out

    def run_round(self, server_round: int, hubs: Params) -> tuple[Params, np.ndarray]:
        """Run one round from the stacked hub models ``y`` ``(D, ...)``.

        Returns
        -------
        tuple[dict[str, torch.Tensor], numpy.ndarray]
            The new hub models ``(D, ...)`` and the steps each worker took.
        """
        draws = self.draws(server_round)
        with torch.no_grad():
            workers = {key: value.index_select(0, self.hub_of) for key, value in hubs.items()}
        self._steps(workers, draws)
        with torch.no_grad():
            hubs = self._mix(self.average, workers)  # z_d = sum_i v_i x_i
            if server_round % self.q == 0:
                hubs = self._mix(self.mix_t, hubs)  # y_d = sum_j H[j, d] z_j
        return hubs, draws.steps

    def run(
        self,
        initial: Params,
        num_rounds: int,
        on_round: Callable[[int, Params, np.ndarray], bool | None] | None = None,
        first_round: int = 1,
    ) -> Params:
        """Run ``num_rounds`` rounds from one shared initial model; return the hub models.

        Parameters
        ----------
        initial : dict[str, torch.Tensor]
            ``x_1``: the model's parameters (unstacked).
        num_rounds : int
            Rounds to run.
        on_round : Callable | None (default: None)
            Called with the round, the stacked hub models ``(D, ...)`` (do not
            modify them) and the steps per worker; returning True stops.
        first_round : int (default: 1)
            Number of the first round.
        """
        num_hubs = int(self.average.shape[0])
        hubs = {
            key: value.detach().to(self.device).unsqueeze(0).repeat(num_hubs, *[1] * value.dim())
            for key, value in initial.items()
        }
        for server_round in range(first_round, first_round + num_rounds):
            hubs, steps = self.run_round(server_round, hubs)
            if on_round is not None and on_round(server_round, hubs, steps):
                break
        return hubs


class HubModels(Sequence["ArrayRecord"]):
    """The hub models of one round as ArrayRecords, converted on first access.

    Holds the stacked tensors (already a fresh result of the round), so
    rounds whose models nobody reads cost no device-to-host copy.
    """

    def __init__(self, stacked: Params) -> None:
        self._stacked = stacked
        self._records: list[ArrayRecord] | None = None

    def _materialise(self) -> list["ArrayRecord"]:
        if self._records is None:
            from flwr.app import ArrayRecord  # pylint: disable=import-outside-toplevel

            host = {key: value.detach().cpu() for key, value in self._stacked.items()}
            count = next(iter(host.values())).shape[0]
            self._records = [
                ArrayRecord({key: value[d].clone() for key, value in host.items()})
                for d in range(count)
            ]
        return self._records

    @overload
    def __getitem__(self, index: int) -> "ArrayRecord": ...

    @overload
    def __getitem__(self, index: slice) -> list["ArrayRecord"]: ...

    def __getitem__(self, index: int | slice) -> "ArrayRecord | list[ArrayRecord]":
        return self._materialise()[index]

    def __len__(self) -> int:
        return int(next(iter(self._stacked.values())).shape[0])

    def __iter__(self) -> Iterator["ArrayRecord"]:
        return iter(self._materialise())


OnRound = Callable[[int, Sequence["ArrayRecord"], np.ndarray], bool | None]


def check_supported(exp: "Experiment") -> None:
    """Raise a one-line ConfigError if the batched backend cannot run ``exp``.

    Raises
    ------
    ConfigError
        ``strategy.name`` other than FedAvg, ``strategy.options`` that sample
        part of a hub (``fraction_train < 1``), or a model with buffers.
    """
    cfg = exp.cfg
    if cfg.strategy.name != "FedAvg":
        raise ConfigError(
            "strategy.name",
            f"the batched backend runs FedAvg at the hubs only, got {cfg.strategy.name!r} "
            "(use simulation.backend=inprocess or ray)",
        )
    fraction = float(getattr(exp.strategy, "fraction_train", 1.0))
    if fraction != 1.0:
        raise ConfigError(
            "strategy.options",
            f"the batched backend trains every worker each round, got fraction_train={fraction}",
        )
    if cfg.model.name not in ("logreg", "cnn"):
        raise ConfigError(
            "model.name", f"the batched backend trains logreg or cnn, got {cfg.model.name!r}"
        )


def simulate(exp: "Experiment", on_round: OnRound | None = None) -> list["ArrayRecord"]:
    """Run a prepared experiment on the batched path; return the final hub models.

    Same algorithm, draws, initial model (``torch.manual_seed(seed)``) and
    hub averaging as the message-based engine, to float32 rounding.

    Parameters
    ----------
    exp : Experiment
        From :func:`flwr_multilevel.experiment.prepare`.
    on_round : Callable[[int, Sequence[ArrayRecord], numpy.ndarray], bool | None] | None
        Called after every round with the round, the hub models ``y_d`` (a
        lazy sequence of ArrayRecords in the model's dtypes: read it only on
        the rounds you need it) and the steps each worker took; returning True
        stops the run.

    Returns
    -------
    list[ArrayRecord]
        The hub models after the last round.

    Raises
    ------
    ConfigError
        A setting the batched backend does not run (:func:`check_supported`).

    Examples
    --------
    >>> from flwr_multilevel.config import load_config, validate
    >>> from flwr_multilevel.experiment import prepare
    >>> exp = prepare(validate(load_config(None, ["rounds=2", "output_dir=/tmp/doc"])))
    >>> len(simulate(exp))
    3
    """
    # pylint: disable=import-outside-toplevel
    from .clients.worker import step_schedule

    check_supported(exp)
    cfg, data = exp.cfg, exp.dataset
    device = resolve_device(str(cfg.simulation.device))
    torch.manual_seed(int(cfg.seed))
    model = build_model(str(cfg.model.name), data.input_shape, data.num_classes)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    runner = BatchedMLLSGD(
        model,
        data.x_train,
        data.y_train,
        exp.partitions,
        exp.hierarchy,
        exp.mixing,
        tau=int(cfg.tau),
        q=int(cfg.q),
        lr=float(cfg.lr),
        batch_size=int(cfg.batch_size),
        seed=int(cfg.seed),
        schedule=step_schedule,
        wait_for_slowest=bool(cfg.wait_for_slowest),
        device=device,
    )

    def report(server_round: int, hubs: Params, steps: np.ndarray) -> bool | None:
        if on_round is None:
            return None
        return on_round(server_round, HubModels(hubs), steps)  # fresh tensors each round

    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled,
        benchmark=True,
        deterministic=torch.backends.cudnn.deterministic,
        allow_tf32=torch.backends.cudnn.allow_tf32,
    ):
        final = runner.run(initial, exp.num_rounds, report)
    return list(HubModels(final))


__all__ = [
    "BatchedMLLSGD",
    "HubModels",
    "RoundDraws",
    "check_supported",
    "example_weights",
    "logreg_grads",
    "round_draws",
    "simulate",
    "vmap_grads",
]
