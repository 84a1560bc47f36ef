"""What a Flower user imports on the server side: the multi-level strategy and its parts.

* :class:`MLLSGD`: the multi-level strategy, a Flower ``Strategy`` over D hubs;
* :class:`HubStrategy`: any stock Flower strategy (or chain of wrappers) run at one hub;
* :class:`PeerLayer`: hub-to-hub gossip, in-process (:class:`InProcessPeerLayer`) or networked.
"""

from .discovery import WorkerDiscoveryError, discover_workers
from .hub import HubStrategy, SubGrid, WorkerSpec, check_reply
from .mllsgd import MLLSGD, RunAborted
from .peer import Gossip, InProcessPeerLayer, PeerLayer, in_neighbours, mix_one
from .report import OnRound, RoundReport

__all__ = [
    "MLLSGD",
    "OnRound",
    "Gossip",
    "HubStrategy",
    "InProcessPeerLayer",
    "PeerLayer",
    "RoundReport",
    "RunAborted",
    "SubGrid",
    "WorkerDiscoveryError",
    "WorkerSpec",
    "check_reply",
    "discover_workers",
    "in_neighbours",
    "mix_one",
]
