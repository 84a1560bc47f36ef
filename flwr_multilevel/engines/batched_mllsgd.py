"""Batched MLL-SGD: every worker of the run advances in one vectorised step.

The message-based engine (:class:`flwr_multilevel.strategies.MLLSGD` and its
ClientApp) runs Algorithm 1 worker by worker. :class:`BatchedMLLSGD` runs the
same algorithm with the same draws (:mod:`flwr_multilevel.engines.batched_draws`)
on stacked per-worker parameters: at each time step the workers whose coin
came up take one SGD step together (for logistic regression a fused in-place
step on cache-sized chunks of workers, a hand-written batched gradient for the
paper's CNN, ``torch.func`` ``vmap(grad(...))`` for other models; see
:mod:`flwr_multilevel.engines.batched_grads`), then every hub averages
``z_d = sum_i v_i x_i`` and every q rounds the hubs mix
``y_d = sum_j H[j, d] z_j``. The training set stays resident in worker order
(on huge pages on a Linux CPU: :mod:`flwr_multilevel.engines.resident`).

Needs only torch and numpy.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from flwr_multilevel.engines.batched_draws import (
    RoundDraws,
    ScheduleFn,
    example_weights,
    round_draws,
)
from flwr_multilevel.engines.batched_grads import (
    Params,
    gradient_function,
    logreg_chunk,
    logreg_grads,
    logreg_sgd_step_,
)
from flwr_multilevel.engines.resident import resident_copy
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import Hierarchy

AVERAGE_SLICE = 64  # workers per float64 slice of the hub averages on a CPU


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
        self.features = resident_copy(features[order], self.device)
        self.labels = labels[order].to(self.device).contiguous()
        weights = example_weights(self.sizes, batch_size)
        self.weights = None if weights is None else torch.from_numpy(weights).to(self.device)
        hub_of = torch.from_numpy(hierarchy.hub_of.astype(np.int64))
        self.hub_of = hub_of.to(self.device)
        average = np.zeros((hierarchy.num_hubs, hierarchy.num_workers))
        average[hierarchy.hub_of, np.arange(hierarchy.num_workers)] = hierarchy.v
        self.average = torch.from_numpy(average).to(self.device)  # z = A x
        self.v = torch.from_numpy(np.asarray(hierarchy.v, dtype=np.float64)).to(self.device)
        self.mix_t = torch.from_numpy(np.asarray(mixing, dtype=np.float64).T.copy()).to(
            self.device
        )  # y = H^T z
        self.grads = gradient_function(self.model, gradients)
        self.fused = self.grads is logreg_grads  # logistic regression: fused in-place steps

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
        chunk = logreg_chunk(self.features, self.batch_size, self.device)  # per torch thread
        start = 0
        for count in draws.counts:
            if count == 0:
                continue
            stop = start + count
            sel = None if count == num_workers else active[start:stop]  # None: everyone
            weights = self.weights
            if sel is not None and weights is not None:
                weights = weights.index_select(0, sel)
            if self.fused:
                features, labels = self.features, self.labels
                step_rows = rows[start:stop]
                logreg_sgd_step_(x, features, labels, step_rows, sel, self.lr, weights, chunk)
            else:
                self._grad_step(x, rows[start:stop], sel, weights)
            start = stop

    def _grad_step(
        self, x: Params, rows: torch.Tensor, sel: torch.Tensor | None, weights: torch.Tensor | None
    ) -> None:
        """One SGD step of the workers ``sel`` (None: all) with :attr:`grads`, in place."""
        flat_rows = rows.reshape(-1)
        inputs = self.features.index_select(0, flat_rows).view(
            *rows.shape, *self.features.shape[1:]
        )
        targets = self.labels.index_select(0, flat_rows).view(rows.shape)
        if sel is None:  # everyone steps: update in place
            grads = self.grads(x, inputs, targets, weights)
            for key, value in x.items():
                value.sub_(self.lr * grads[key])
        else:  # only the workers whose coin came up
            sub = {key: value.index_select(0, sel) for key, value in x.items()}
            grads = self.grads(sub, inputs, targets, weights)
            for key, value in x.items():
                value.index_copy_(0, sel, sub[key] - self.lr * grads[key])

    def _average(self, stacked: Params) -> Params:
        """Return the hub averages ``z_d = sum_i v_i x_i`` ``(D, ...)``, summed in float64.

        On a CPU the workers are added to their hub's sum a slice at a time
        (each worker's model weighs in once, so this costs one pass over the
        models instead of a dense ``D x N`` product on a float64 copy of all
        of them); elsewhere one dense product.
        """
        if self.device.type != "cpu":
            return self._mix(self.average, stacked)
        num_hubs, num_workers = self.average.shape
        out = {}
        for key, value in stacked.items():
            flat = value.reshape(num_workers, -1)
            total = flat.new_zeros((num_hubs, flat.shape[1]), dtype=torch.float64)
            for start in range(0, num_workers, AVERAGE_SLICE):
                stop = min(start + AVERAGE_SLICE, num_workers)
                part = flat[start:stop].to(torch.float64).mul_(self.v[start:stop, None])
                total.index_add_(0, self.hub_of[start:stop], part)
            out[key] = total.to(value.dtype).reshape(num_hubs, *value.shape[1:])
        return out

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
            hubs = self._average(workers)  # z_d = sum_i v_i x_i
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


__all__ = ["AVERAGE_SLICE", "BatchedMLLSGD"]
