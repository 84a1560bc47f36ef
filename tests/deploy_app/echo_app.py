"""A tiny hub app for the deployment tests.

Its ServerApp asks each node of its SuperLink for its node config and prints
it (``ECHO ...``); with ``peers`` set it then gossips three rounds with the
other hub through :class:`NetworkPeerLayer` (``GOSSIP ...``), H = all halves.
"""

import time

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    ConfigRecordValues,
    Context,
    Message,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from flwr_multilevel.strategies.network_peer import NetworkPeerLayer, PeerTls, parse_peers

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Echo every node's config, then gossip with the peer hub if there is one."""
    config = context.run_config
    want = int(config["min-nodes"])
    nodes: list[int] = []
    for _ in range(300):
        nodes = list(grid.get_node_ids())
        if len(nodes) >= want:
            break
        time.sleep(0.1)
    messages = [
        Message(RecordDict({"c": ConfigRecord({})}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    for reply in grid.send_and_receive(messages, timeout=60):
        node = dict(reply.content["c"])
        print(f"ECHO tag={config['tag']} node={reply.metadata.src_node_id} {node}", flush=True)
    if config["peers"]:
        gossip(config)


def gossip(config: dict) -> None:
    """Three gossip rounds of hub ``hub-id``; its model starts at its hub id."""
    d = int(config["hub-id"])
    tls = PeerTls.from_files(config["ca"], config["cert"], config["key"]) if config["ca"] else None
    layer = NetworkPeerLayer(
        d,
        np.full((2, 2), 0.5),
        str(config["listen"]),
        parse_peers(str(config["peers"])),
        tls=tls,
        insecure=tls is None,
        timeout=60,
    )
    z = ArrayRecord({"w": Array(np.full(3, float(d), np.float32))})
    try:
        for server_round in range(1, 4):
            mixed = layer.exchange(d, server_round, z)
            w = mixed.model["w"].numpy().tolist()
            print(f"GOSSIP hub={d} round={server_round} w={w} skipped={mixed.skipped}", flush=True)
            z = mixed.model
    finally:
        layer.close()


@client.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with this node's config."""
    node: dict[str, ConfigRecordValues] = {k: str(v) for k, v in context.node_config.items()}
    return Message(RecordDict({"c": ConfigRecord(node)}), reply_to=msg)
