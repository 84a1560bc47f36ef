"""The peer layer: how a hub swaps models with its neighbours every q rounds.

One interface serves every deployment. A hub hands its sub-network average
``z_d`` to the layer and gets back its gossiped model
``y_d = sum_j H[j, d] z_j``, summed over its in-neighbours j (``H[j, d] != 0``)
and itself. Only those models cross hub-to-hub links.

* :class:`InProcessPeerLayer`: every hub lives in one ServerApp (simulation);
  the mix is one matrix product once all hubs have published.
* a networked layer: one ServerApp per hub, models travel between hub
  processes. It implements the same two calls, so the hub code is identical.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord

from flwr_multilevel.model.mixing import mix_models
from flwr_multilevel.protocol.arrays import record_bytes, stack, unstack


@dataclass
class Gossip:
    """What one hub got from one gossip round.

    Attributes
    ----------
    model : ArrayRecord
        ``y_d``, the hub's model after mixing.
    bytes_in : int
        Serialized array bytes the hub received from its in-neighbours.
    skipped : list[int]
        In-neighbours whose model did not arrive (or was refused) this round;
        their weight ``H[j, d]`` went to the hub's own model.
    """

    model: ArrayRecord
    bytes_in: int = 0
    skipped: list[int] = field(default_factory=list)


class PeerLayer(ABC):
    """Hub-to-hub gossip, seen from one hub at a time.

    A gossip round has two phases so that hubs sharing one process can all
    publish before any of them mixes: :meth:`publish` offers the hub's
    ``z_d`` to its out-neighbours, :meth:`collect` returns its ``y_d``.
    A hub that runs as its own server calls :meth:`exchange`, which does both.
    Rounds are matched by number: a model published for another round is
    never mixed in.
    """

    @abstractmethod
    def publish(self, hub_id: int, server_round: int, model: ArrayRecord) -> None:
        """Offer hub ``hub_id``'s model ``z_d`` of ``server_round`` to its neighbours."""

    @abstractmethod
    def collect(self, hub_id: int, server_round: int) -> Gossip:
        """Return hub ``hub_id``'s mixed model ``y_d`` of ``server_round``."""

    def withhold(self, hub_id: int, server_round: int, reason: str) -> None:  # noqa: B027
        """Say that hub ``hub_id`` sits ``server_round``'s gossip out, and why.

        A hub that kept its model this round (cut off from its workers, or its
        strategy failed) publishes nothing; its neighbours mix without it (its
        weight goes to their own models). A networked layer tells them at
        once, so they need not wait for their timeout; by default (all hubs in
        one process, where not publishing is enough) this does nothing.
        """

    def exchange(self, hub_id: int, server_round: int, model: ArrayRecord) -> Gossip:
        """Publish ``z_d`` and return ``y_d``: one gossip round of one hub."""
        self.publish(hub_id, server_round, model)
        return self.collect(hub_id, server_round)

    def close(self) -> None:  # noqa: B027 (optional, not abstract)
        """Release what the layer holds (servers, channels); a no-op by default."""


def in_neighbours(mixing: np.ndarray, hub_id: int) -> list[int]:
    """Return the hubs whose model hub ``hub_id`` mixes in: ``j != d`` with ``H[j, d] != 0``.

    Examples
    --------
    >>> in_neighbours(np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.5], [0.0, 0.25, 0.5]]), 1)
    [0, 2]
    """
    return [j for j in range(len(mixing)) if j != hub_id and mixing[j, hub_id] != 0]


class InProcessPeerLayer(PeerLayer):
    """All hubs live in one process: mix them through H at once (Jacobi).

    Every hub publishes, then each collects; the first :meth:`collect` of a
    round mixes all hubs in one matrix product. A hub that did not publish
    (cut off from its workers this round) is left out: its neighbours move its
    weight to their own model (:func:`mix_one`) and list it as skipped.
    Publishing for a new round discards the previous one.

    Parameters
    ----------
    mixing : numpy.ndarray
        The ``D x D`` mixing matrix H; hub d receives ``sum_j H[j, d] z_j``.

    Examples
    --------
    >>> from flwr.app import Array
    >>> layer = InProcessPeerLayer(np.array([[0.5, 0.5], [0.5, 0.5]]))
    >>> for d, value in enumerate([0.0, 2.0]):
    ...     layer.publish(d, 1, ArrayRecord({"w": Array(np.full(2, value, np.float32))}))
    >>> layer.collect(0, 1).model["w"].numpy().tolist()
    [1.0, 1.0]
    """

    def __init__(self, mixing: np.ndarray) -> None:
        self.mixing = np.asarray(mixing, dtype=np.float64)
        self._round: int | None = None
        self._published: dict[int, ArrayRecord] = {}
        self._mixed: list[ArrayRecord] | None = None

    def publish(self, hub_id: int, server_round: int, model: ArrayRecord) -> None:
        """Hold ``z_d`` until every hub of the round has published."""
        if server_round != self._round:
            self._round, self._published, self._mixed = server_round, {}, None
        self._published[hub_id] = model

    def collect(self, hub_id: int, server_round: int) -> Gossip:
        """Return ``y_d = sum_j H[j, d] z_j`` over the hubs that published this round.

        Raises
        ------
        RuntimeError
            Hub ``hub_id`` itself has not published for ``server_round``.
        """
        if server_round != self._round or hub_id not in self._published:
            raise RuntimeError(f"gossip round {server_round}: hub {hub_id} has not published")
        if len(self._published) < len(self.mixing):
            others = {j: m for j, m in self._published.items() if j != hub_id}
            return mix_one(self.mixing, hub_id, self._published[hub_id], others)
        if self._mixed is None:
            models, layout = stack([self._published[d] for d in range(len(self.mixing))])
            self._mixed = unstack(mix_models(self.mixing, models), layout)
        neighbours = in_neighbours(self.mixing, hub_id)
        received = sum(record_bytes(self._published[j]) for j in neighbours)
        return Gossip(self._mixed[hub_id], bytes_in=received)


def mix_one(
    mixing: np.ndarray, hub_id: int, own: ArrayRecord, received: Mapping[int, ArrayRecord]
) -> Gossip:
    """Return hub ``hub_id``'s ``y_d`` from its own ``z_d`` and the neighbour models received.

    The weight ``H[j, d]`` of an in-neighbour j missing from ``received`` goes
    to the hub's own model, so the column still sums to 1. This is the mixing
    rule of a networked layer, where a neighbour can be late or down.

    Examples
    --------
    >>> from flwr.app import Array
    >>> H = np.array([[0.5, 0.5], [0.5, 0.5]])
    >>> own = ArrayRecord({"w": Array(np.zeros(1, np.float32))})
    >>> other = ArrayRecord({"w": Array(np.full(1, 2.0, np.float32))})
    >>> mix_one(H, 0, own, {1: other}).model["w"].numpy().tolist()
    [1.0]
    >>> gossip = mix_one(H, 0, own, {})
    >>> gossip.model["w"].numpy().tolist(), gossip.skipped
    ([0.0], [1])
    """
    neighbours = in_neighbours(mixing, hub_id)
    present = [j for j in neighbours if j in received]
    skipped = [j for j in neighbours if j not in received]
    weights = np.array(
        [mixing[hub_id, hub_id] + sum(mixing[j, hub_id] for j in skipped)]
        + [mixing[j, hub_id] for j in present]
    )
    models, layout = stack([own, *(received[j] for j in present)])
    mixed = unstack((weights @ models)[None, :], layout)[0]
    return Gossip(mixed, sum(record_bytes(received[j]) for j in present), skipped)
