"""The peer layer: how hubs exchange and mix their models every q rounds."""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord

from .arrays import record_bytes, stack, unstack
from .mixing import mix_models


class PeerLayer(Protocol):
    """Hub-to-hub gossip.

    ``exchange`` receives every hub's model after its sub-network average
    (``z_d``) and returns every hub's model after gossip (``y_d``).
    Implementations may run in-process (all hubs in one ServerApp) or over the
    network (one ServerApp per hub). ``bytes_sent`` counts the serialized
    array bytes that crossed hub-to-hub links in the last exchange.
    """

    bytes_sent: int

    def exchange(self, server_round: int, hub_models: Sequence[ArrayRecord]) -> list[ArrayRecord]:
        """Return the mixed hub models."""


class InProcessPeerLayer:
    """All hubs live in one process: mix them at once through H (Jacobi).

    Parameters
    ----------
    mixing : numpy.ndarray
        The ``D x D`` mixing matrix H; hub d receives ``sum_j H[j, d] z_j``.
    """

    def __init__(self, mixing: np.ndarray) -> None:
        self.mixing = np.asarray(mixing, dtype=np.float64)
        self.bytes_sent = 0

    def links(self) -> list[tuple[int, int]]:
        """Return the hub-to-hub transfers of one exchange: ``(j, d)`` with ``H[j, d] != 0``."""
        size = len(self.mixing)
        return [(j, d) for j in range(size) for d in range(size) if j != d and self.mixing[j, d]]

    def exchange(self, server_round: int, hub_models: Sequence[ArrayRecord]) -> list[ArrayRecord]:
        """Return ``y_d = sum_j H[j, d] z_j`` for every hub d."""
        del server_round  # the in-process layer mixes the same way every time
        self.bytes_sent = sum(record_bytes(hub_models[j]) for j, _ in self.links())
        models, layout = stack(hub_models)
        return unstack(mix_models(self.mixing, models), layout)
