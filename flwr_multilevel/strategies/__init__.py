"""What a Flower user imports on the server side: the multi-level strategy and its parts.

* :class:`MLLSGD`: the multi-level strategy, a Flower ``Strategy`` over D hubs;
* :class:`HubStrategy`: any stock Flower strategy (or chain of wrappers) run at one hub;
* :class:`PeerLayer`: hub-to-hub gossip, in-process (:class:`InProcessPeerLayer`) or networked.
"""

from flwr_multilevel.strategies.discovery import WorkerDiscoveryError, discover_workers
from flwr_multilevel.strategies.hub import HubStrategy, WorkerSpec
from flwr_multilevel.strategies.mllsgd import MLLSGD, RunAborted
from flwr_multilevel.strategies.peer import (
    Gossip,
    InProcessPeerLayer,
    PeerLayer,
    in_neighbours,
    mix_one,
)
from flwr_multilevel.strategies.replies import check_reply
from flwr_multilevel.strategies.report import OnRound, RoundReport
from flwr_multilevel.strategies.subgrid import SubGrid

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
