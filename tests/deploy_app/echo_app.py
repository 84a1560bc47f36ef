"""A tiny Flower App for the deployment tests: each node echoes its node config."""

import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Wait for ``min-nodes`` nodes, ask each for its node config, print it."""
    want = int(context.run_config["min-nodes"])
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
        config = dict(reply.content["c"])
        print(f"ECHO tag={context.run_config['tag']} node={reply.metadata.src_node_id} {config}")


@client.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with this node's config."""
    config = {k: str(v) for k, v in context.node_config.items()}
    return Message(RecordDict({"c": ConfigRecord(config)}), reply_to=msg)
