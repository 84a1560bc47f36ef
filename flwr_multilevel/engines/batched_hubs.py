"""The hub side of a batched round: clip, check and average the workers, then gossip.

What :class:`flwr_multilevel.strategies.hub.HubStrategy` does to the replies
of its workers, on stacked per-worker models (``hub.*`` of the config,
:class:`HubRules`):

* a worker whose model holds NaN or Inf has no valid reply (the message
  engine drops such a reply); every other worker replies, also one that took
  no step (it sends back ``y_d``);
* ``clip_norm``: every valid worker's update ``x_i - y_d`` is clipped to that
  L2 norm, in float64 (:func:`clip_updates_`, as ``clip_arrays``);
* ``min_replies``: a hub with fewer valid replies than that fraction of its
  workers, or with none, keeps its model ``y_d`` for the round (it *failed*);
* ``missing``: a worker without a valid reply enters the average as ``y_d``
  with its weight ``v_i`` (``stay``), or is left out and the weights of the
  others renormalised (``renormalize``);
* a hub whose average is not finite keeps its model too;
* a failed hub sits the gossip out: it keeps its model, and its neighbours
  give its weight ``H[j, d]`` to their own model (:func:`gossip_matrix`, as
  :func:`flwr_multilevel.strategies.peer.mix_one`).

Everything here needs only torch and numpy.
"""

from collections.abc import Collection
from typing import NamedTuple

import numpy as np
import torch

from flwr_multilevel.engines.batched_grads import Params
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.mixing import SPARSE_HUBS, is_sparse

AVERAGE_SLICE = 64  # workers per float64 slice of the hub averages on a CPU
CLIP_ELEMENTS = 1 << 22  # float64 values per slice of the clipping (32 MiB)


class HubRules(NamedTuple):
    """How every hub treats its workers' models: the config's ``hub.*``.

    Attributes
    ----------
    missing : str (default: "stay")
        A worker without a valid reply counts as ``y_d`` with its weight
        (``"stay"``), or is left out and the others renormalised (``"renormalize"``).
    clip_norm : float | None (default: None)
        Clip every worker's update ``x_i - y_d`` to this L2 norm.
    min_replies : float (default: 0.0)
        Fraction of a hub's workers whose replies must be valid, or it keeps its model.
    max_failed_rounds : int (default: 5)
        Stop the run once a hub kept its model this many rounds in a row (0: never).
    """

    missing: str = "stay"
    clip_norm: float | None = None
    min_replies: float = 0.0
    max_failed_rounds: int = 5


def checked_rules(rules: HubRules) -> HubRules:
    """Return ``rules`` if every value is in range.

    Raises
    ------
    ConfigError
        Naming the ``hub.*`` key at fault.

    Examples
    --------
    >>> checked_rules(HubRules(clip_norm=1.0)).clip_norm
    1.0
    >>> checked_rules(HubRules(missing="skip"))
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: hub.missing: expected stay or renormalize, got 'skip'
    """
    if rules.missing not in ("stay", "renormalize"):
        raise ConfigError("hub.missing", f"expected stay or renormalize, got {rules.missing!r}")
    clip = rules.clip_norm
    if clip is not None and not (np.isfinite(clip) and clip > 0):
        raise ConfigError("hub.clip_norm", f"expected a finite number > 0, got {clip!r}")
    if not 0.0 <= rules.min_replies <= 1.0:
        raise ConfigError(
            "hub.min_replies", f"expected a fraction in [0, 1], got {rules.min_replies}"
        )
    if rules.max_failed_rounds < 0:
        raise ConfigError(
            "hub.max_failed_rounds", f"expected an integer >= 0, got {rules.max_failed_rounds}"
        )
    return rules


def hub_sums(stacked: Params, v: torch.Tensor, hub_of: torch.Tensor, num_hubs: int) -> Params:
    """Return ``z_d = sum_i v_i x_i`` ``(D, ...)``, summed in float64, cast back to each dtype.

    The workers are added to their hub's sum a slice at a time (each worker's
    model weighs in once, so this costs one pass over the models instead of a
    dense ``D x N`` product on a float64 copy of all of them). A worker adds
    to its own hub's sum only.

    Examples
    --------
    >>> x = {"w": torch.tensor([[1.0], [3.0], [5.0]])}
    >>> v = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    >>> hub_sums(x, v, torch.tensor([0, 0, 1]), 2)["w"].tolist()
    [[2.0], [5.0]]
    """
    num_workers = len(hub_of)
    out = {}
    for key, value in stacked.items():
        flat = value.reshape(num_workers, -1)
        total = flat.new_zeros((num_hubs, flat.shape[1]), dtype=torch.float64)
        for start in range(0, num_workers, AVERAGE_SLICE):
            stop = min(start + AVERAGE_SLICE, num_workers)
            part = flat[start:stop].to(torch.float64).mul_(v[start:stop, None])
            total.index_add_(0, hub_of[start:stop], part)
        out[key] = total.to(value.dtype).reshape(num_hubs, *value.shape[1:])
    return out


def average_matrix(v: torch.Tensor, hub_of: torch.Tensor, num_hubs: int) -> torch.Tensor:
    """Return the ``D x N`` float64 matrix A with ``z = A x``: ``A[hub_of[i], i] = v_i``.

    From :data:`~flwr_multilevel.model.mixing.SPARSE_HUBS` hubs on, A is a
    sparse (COO) tensor of its N nonzeros: dense, it would hold ``D x N``
    numbers (8 GB at 10,000 hubs of 100,000 workers) and its product cost
    ``D x N`` model-sized terms.

    Examples
    --------
    >>> v = torch.tensor([0.25, 0.75, 1.0], dtype=torch.float64)
    >>> average_matrix(v, torch.tensor([0, 0, 1]), 2).tolist()
    [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]
    >>> average_matrix(v, torch.tensor([0, 0, 1]), 600).is_sparse
    True
    """
    if num_hubs >= SPARSE_HUBS:
        index = torch.stack([hub_of, torch.arange(len(hub_of), device=v.device)])
        size = (num_hubs, len(hub_of))
        values = v.to(torch.float64)
        return torch.sparse_coo_tensor(index, values, size, check_invariants=False).coalesce()
    matrix = torch.zeros((num_hubs, len(hub_of)), dtype=torch.float64, device=v.device)
    matrix[hub_of, torch.arange(len(hub_of), device=v.device)] = v.to(torch.float64)
    return matrix


def mixing_tensor(matrix: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Return ``matrix`` (a mixing matrix, transposed or not) for :func:`mix` on ``device``.

    Sparse (COO) when it is large and sparse enough
    (:func:`~flwr_multilevel.model.mixing.is_sparse`), dense otherwise.

    Examples
    --------
    >>> mixing_tensor(np.eye(600)).is_sparse, mixing_tensor(np.eye(3)).is_sparse
    (True, False)
    """
    dense = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))
    return (dense.to_sparse() if is_sparse(matrix) else dense).to(device)


def mix(matrix: torch.Tensor, stacked: Params) -> Params:
    """Return ``matrix @ stacked`` per array, in float64, cast back to each dtype.

    A sparse ``matrix`` (:func:`mixing_tensor`) is applied by its nonzeros
    (``torch.sparse.mm``): a ring of 4,000 hubs costs its ``3 D`` products,
    not ``D^2``.
    """
    out = {}
    for key, value in stacked.items():
        flat = value.reshape(value.shape[0], -1).to(torch.float64)
        product = torch.sparse.mm(matrix, flat) if matrix.is_sparse else matrix @ flat
        mixed = product.to(value.dtype)
        out[key] = mixed.reshape(matrix.shape[0], *value.shape[1:])
    return out


def finite_rows(stacked: Params) -> torch.Tensor:
    """Return, per row (worker or hub), whether every value of its model is finite ``(N,)``.

    Examples
    --------
    >>> finite_rows({"w": torch.tensor([[1.0, 2.0], [1.0, float("inf")]])}).tolist()
    [True, False]
    """
    finite: torch.Tensor | None = None
    for value in stacked.values():
        rows = torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
        finite = rows if finite is None else finite & rows
    assert finite is not None, "a model without arrays"
    return finite


def first_non_finite(stacked: Params, row: int) -> str:
    """Return the first array (in the model's order) of row ``row`` that holds NaN or Inf."""
    return next(key for key, value in stacked.items() if not torch.isfinite(value[row]).all())


def clip_updates_(workers: Params, hubs: Params, hub_of: torch.Tensor, clip_norm: float) -> None:
    """Clip every worker's update ``x_i - y_d`` to L2 norm ``clip_norm``, in place.

    As the message engine's ``clip_arrays``: the norm over all arrays and the
    clipped model ``y_d + (clip_norm / norm) (x_i - y_d)`` are computed in
    float64, then cast to the model's dtype; a worker within the norm keeps
    its model as it is, and so does one whose norm is not finite (its model
    holds NaN or Inf: it has no valid reply). Workers are taken a slice at a
    time (at most ``CLIP_ELEMENTS`` float64 values).

    Examples
    --------
    >>> x = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]])}
    >>> clip_updates_(x, {"w": torch.zeros(1, 2)}, torch.tensor([0, 0]), 1.0)
    >>> x["w"].tolist()
    [[0.6000000238418579, 0.800000011920929], [0.30000001192092896, 0.4000000059604645]]
    """
    num_workers = len(hub_of)
    size = sum(value[0].numel() for value in workers.values())
    step = max(1, CLIP_ELEMENTS // max(1, size))
    for start in range(0, num_workers, step):
        stop = min(start + step, num_workers)
        hub = hub_of[start:stop]
        own = {key: hubs[key].index_select(0, hub).to(torch.float64) for key in workers}
        update = {key: workers[key][start:stop].to(torch.float64) - own[key] for key in workers}
        squares = sum(u.reshape(stop - start, -1).square().sum(dim=1) for u in update.values())
        norm = torch.as_tensor(squares).sqrt()
        over = torch.nonzero(torch.isfinite(norm) & (norm > clip_norm)).flatten()
        if over.numel() == 0:
            continue
        scale = (clip_norm / norm.index_select(0, over)).reshape(-1, 1)
        for key, value in workers.items():
            moved = update[key].index_select(0, over).reshape(len(over), -1).mul_(scale)
            clipped = own[key].index_select(0, over).reshape(len(over), -1).add_(moved)
            value[start:stop].index_copy_(
                0, over, clipped.to(value.dtype).reshape(len(over), *value.shape[1:])
            )


def gossip_matrix(mixing: np.ndarray, failed: Collection[int]) -> np.ndarray:
    """Return the mixing matrix of a gossip that the hubs ``failed`` sit out.

    A failed hub keeps its own model (its column is ``e_d``); every other hub
    d gives the weight ``H[j, d]`` of a failed in-neighbour j to its own model,
    as :func:`flwr_multilevel.strategies.peer.mix_one` does.

    Examples
    --------
    >>> H = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.0, 0.25, 0.75]])
    >>> gossip_matrix(H, [2]).tolist()
    [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    matrix = np.array(mixing, dtype=np.float64)
    num_hubs = len(matrix)
    for d in range(num_hubs):
        if d in failed:
            matrix[:, d] = 0.0
            matrix[d, d] = 1.0
            continue
        skipped = [j for j in failed if j != d and mixing[j, d] != 0]
        matrix[d, d] = mixing[d, d] + sum(mixing[j, d] for j in skipped)
        matrix[skipped, d] = 0.0
    return matrix


__all__ = [
    "AVERAGE_SLICE",
    "HubRules",
    "average_matrix",
    "checked_rules",
    "clip_updates_",
    "finite_rows",
    "first_non_finite",
    "gossip_matrix",
    "hub_sums",
    "mix",
]
