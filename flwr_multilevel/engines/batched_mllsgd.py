"""Batched MLL-SGD: every worker of the run advances in one vectorised step.

The message-based engine (:class:`flwr_multilevel.strategies.MLLSGD` and its
ClientApp) runs Algorithm 1 worker by worker. :class:`BatchedMLLSGD` runs the
same algorithm with the same draws (:mod:`flwr_multilevel.engines.batched_draws`)
on stacked per-worker parameters: at each time step the workers whose coin
came up take one SGD step together (for logistic regression a fused in-place
step on cache-sized chunks of workers, a hand-written batched gradient for the
paper's CNN, ``torch.func`` ``vmap(grad(...))`` for other models; see
:mod:`flwr_multilevel.engines.batched_grads`), then every hub averages
``z_d = sum_i v_i x_i`` under the config's ``hub.*`` rules
(:mod:`flwr_multilevel.engines.batched_hubs`) and every q rounds the hubs mix
``y_d = sum_j H[j, d] z_j``. The training set stays resident in worker order
(on huge pages on a Linux CPU: :mod:`flwr_multilevel.engines.resident`).

Needs only torch and numpy.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

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
from flwr_multilevel.engines.batched_hubs import (
    HubRules,
    average_matrix,
    checked_rules,
    clip_updates_,
    finite_rows,
    first_non_finite,
    gossip_matrix,
    hub_sums,
    mix,
    mixing_tensor,
)
from flwr_multilevel.engines.resident import resident_copy
from flwr_multilevel.errors import ConfigError, RunAborted
from flwr_multilevel.model.hierarchy import Hierarchy

DEFAULT_RULES = HubRules()  # the config's defaults


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


class RoundResult(NamedTuple):
    """What one batched round did.

    Attributes
    ----------
    hubs : dict[str, torch.Tensor]
        The new hub models ``y_d`` ``(D, ...)``.
    steps : numpy.ndarray
        Steps each worker took ``(N,)``; 0 for a worker without a valid reply
        (as the message engine, which counts only valid replies' steps).
    failed : dict[int, str]
        Hubs that kept their model this round, and why.
    dropped : dict[int, str]
        Workers without a valid reply (their model holds NaN or Inf), and why,
        in the message engine's words.
    """

    hubs: Params
    steps: np.ndarray
    failed: dict[int, str]
    dropped: dict[int, str]


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
    rules : HubRules (default: HubRules())
        How the hubs treat their workers' models (``hub.*``; the defaults are
        the config's).

    Raises
    ------
    ConfigError
        ``model.name``: a model with buffers (BatchNorm's running statistics);
        a ``hub.*`` rule out of range.
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
        rules: HubRules = DEFAULT_RULES,
    ) -> None:
        if any(True for _ in model.buffers()):
            raise ConfigError(
                "model.name",
                f"the batched backend trains models without buffers (logreg, cnn), got "
                f"{type(model).__name__}",
            )
        self.rules = checked_rules(rules)
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
        self.num_hubs = hierarchy.num_hubs
        self.hub_of_host = np.asarray(hierarchy.hub_of, dtype=np.int64)
        self.hub_of = torch.from_numpy(self.hub_of_host).to(self.device)
        self.v = torch.from_numpy(np.asarray(hierarchy.v, dtype=np.float64)).to(self.device)
        self.average = average_matrix(self.v, self.hub_of, self.num_hubs)  # z = A x
        self.mixing = np.asarray(mixing, dtype=np.float64)
        self.mix_t = mixing_tensor(self.mixing.T, self.device)  # y = H^T z (sparse if it is)
        self.grads = gradient_function(self.model, gradients)
        self.fused = self.grads is logreg_grads  # logistic regression: fused in-place steps
        self._ahead: tuple[int, RoundDraws] | None = None  # the next round's draws (GPU)

    def draws(self, server_round: int) -> RoundDraws:
        """Return the draws of every worker for ``server_round``."""
        ahead = self._ahead
        if ahead is not None and ahead[0] == server_round:
            return ahead[1]
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

    def _average(self, stacked: Params, v: torch.Tensor | None = None) -> Params:
        """Return the hub averages ``z_d = sum_i v_i x_i`` ``(D, ...)``, summed in float64.

        ``v``: the workers' weights (default: the hierarchy's ``v_i``). On a
        CPU the workers are added a slice at a time (:func:`hub_sums`);
        elsewhere one dense product.
        """
        weights = self.v if v is None else v
        if self.device.type != "cpu":
            matrix = self.average if v is None else average_matrix(v, self.hub_of, self.num_hubs)
            return mix(matrix, stacked)
        return hub_sums(stacked, weights, self.hub_of, self.num_hubs)

    def _hub_averages(
        self, workers: Params, hubs: Params
    ) -> tuple[Params, dict[int, str], dict[int, str]]:
        """Return every hub's ``z_d`` under :attr:`rules`, the failed hubs, the dropped workers.

        A failed hub's ``z_d`` is its model ``y_d``. Workers are checked only
        when a hub average is not finite (a worker's NaN or Inf reaches its
        hub's); the dropped ones are those whose model holds NaN or Inf.
        """
        if self.rules.clip_norm is not None:
            clip_updates_(workers, hubs, self.hub_of, self.rules.clip_norm)
        averages = self._average(workers)
        suspects = np.flatnonzero(~finite_rows(averages).cpu().numpy())
        if len(suspects) == 0:
            return averages, {}, {}
        return self._without_invalid(workers, hubs, averages, suspects)

    def _without_invalid(
        self, workers: Params, hubs: Params, averages: Params, suspects: np.ndarray
    ) -> tuple[Params, dict[int, str], dict[int, str]]:
        """Redo the averages of the hubs ``suspects`` as the message engine does.

        Workers whose models hold NaN or Inf have no valid reply: a hub with
        too few valid replies (``min_replies``, or none) keeps its model; in the
        others they count as ``y_d`` (``stay``) or are left out
        (``renormalize``); an average that is still not finite keeps the model.
        """
        valid = finite_rows(workers).cpu().numpy()
        dropped = {
            int(w): f"array '{first_non_finite(workers, int(w))}' holds NaN or Inf"
            for w in np.flatnonzero(~valid)
        }
        weights = self.v.clone()
        failed: dict[int, str] = {}
        for hub in suspects.tolist():
            members = np.flatnonzero(self.hub_of_host == hub)
            ok = valid[members]
            count = int(ok.sum())
            if count == 0 or count < self.rules.min_replies * len(members):
                first = int(members[~ok][0])
                reason = f"worker {first}: {dropped[first]}"
                failed[hub] = f"{count} of {len(members)} replies were valid (first: {reason})"
            elif self.rules.missing == "renormalize":
                index = torch.from_numpy(members).to(self.device)
                kept = weights[index] * torch.from_numpy(ok).to(self.device)
                weights[index] = kept / kept.sum()
        invalid = torch.from_numpy(np.flatnonzero(~valid)).to(self.device)
        with torch.no_grad():  # no valid reply: the hub's model y_d stands in
            for key, value in workers.items():
                value.index_copy_(0, invalid, hubs[key].index_select(0, self.hub_of[invalid]))
            redone = self._average(workers, weights)
        finite = finite_rows(redone).cpu().numpy()
        for hub in suspects.tolist():
            if hub not in failed and not finite[hub]:
                failed[hub] = "the aggregate is not finite"
            source = hubs if hub in failed else redone
            for key, value in averages.items():
                value[hub] = source[key][hub]
        return averages, failed, dropped

    def run_round(self, server_round: int, hubs: Params) -> RoundResult:
        """Run one round from the stacked hub models ``y`` ``(D, ...)``."""
        draws = self.draws(server_round)
        with torch.no_grad():
            workers = {key: value.index_select(0, self.hub_of) for key, value in hubs.items()}
        self._steps(workers, draws)
        if self.device.type != "cpu":  # the next round's draws while the device steps
            self._ahead = (server_round + 1, self.draws(server_round + 1))
        with torch.no_grad():
            averages, failed, dropped = self._hub_averages(workers, hubs)  # z_d = sum_i v_i x_i
            new_hubs = averages
            if server_round % self.q == 0:  # y_d = sum_j H[j, d] z_j
                matrix = self.mix_t
                if failed:  # the failed hubs sit the gossip out
                    matrix = mixing_tensor(gossip_matrix(self.mixing, failed).T)
                new_hubs = mix(matrix.to(self.device), averages)
        steps = draws.steps.copy()
        steps[list(dropped)] = 0  # a worker without a valid reply took no step
        return RoundResult(new_hubs, steps, failed, dropped)

    def run(
        self,
        initial: Params,
        num_rounds: int,
        on_round: Callable[[int, RoundResult], bool | None] | None = None,
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
            Called with the round and its :class:`RoundResult` (do not modify
            the stacked hub models ``(D, ...)``); returning True stops.
        first_round : int (default: 1)
            Number of the first round.

        Raises
        ------
        RunAborted
            A hub kept its model ``rules.max_failed_rounds`` rounds in a row
            (after ``on_round`` of that round: the round is recorded first).
        """
        hubs = {
            key: value.detach()
            .to(self.device)
            .unsqueeze(0)
            .repeat(self.num_hubs, *[1] * value.dim())
            for key, value in initial.items()
        }
        in_a_row = [0] * self.num_hubs
        for server_round in range(first_round, first_round + num_rounds):
            result = self.run_round(server_round, hubs)
            hubs, failed = result.hubs, result.failed
            stop = on_round is not None and on_round(server_round, result)
            for hub in range(self.num_hubs):
                in_a_row[hub] = in_a_row[hub] + 1 if hub in failed else 0
                limit = self.rules.max_failed_rounds
                if limit and in_a_row[hub] >= limit:
                    raise RunAborted(
                        f"hub {hub} kept its model for {in_a_row[hub]} rounds in a row "
                        f"(round {server_round}); last reason: {failed[hub]}"
                    )
            if stop:
                break
        self._ahead = None
        return hubs


__all__ = ["BatchedMLLSGD", "HubRules", "RoundResult"]
