"""One owner of every message and record key: flwr_multilevel/protocol/keys.py (issue 15).

Every module uses the constants of :mod:`flwr_multilevel.protocol.keys`; a key's literal
anywhere else in the package is a leak (as ``tests/test_flower_compat.py`` finds private Flower
names outside ``flower_compat``). A key whose value has a hyphen (``worker-id``) means the
message key wherever it appears; a plain word (``seed``, ``steps``) is also a run-config key, a
CSV column or a JSON field elsewhere, so it counts as a leak only in the modules that do
nothing but build and read messages.
"""

import ast
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg, FedProx

from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.protocol import keys
from flwr_multilevel.strategies.chain import weighting_aggregator

PACKAGE = Path(keys.__file__).parents[1]
OWNER = PACKAGE / "protocol"
KEYS = {
    value: name for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)
}
MESSAGE_MODULES = (  # they handle messages and records only: no plain-word key literal either
    "clients/mod.py",
    "clients/worker.py",
    "client_app.py",
    "strategies/hub.py",
    "strategies/records.py",
    "strategies/replies.py",
    "strategies/hub_metrics.py",
    "strategies/discovery.py",
    "strategies/chain.py",
    "strategies/settings.py",
    "engines/local_grid.py",
    "baselines/mll_sgd/mll_sgd/client_app.py",
)
ALLOWED = {  # modules another branch owns; each entry goes once the module uses the constants
    "deploy/federation.py": {"partition-id", "worker-id", "hub-id"},  # SuperNode node config
    "deploy/hub_app.py": {"hub-id"},  # the deploy.hub-id run-config key (same word)
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def key_literals(source: str, plain_words: bool) -> list[tuple[int, str]]:
    """Return ``(line, key)`` of every string constant equal to a key (docstrings aside)."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in KEYS
        and id(node) not in skip
        and (plain_words or "-" in node.value)
    )


def test_no_key_literal_outside_protocol():
    hits, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if OWNER in path.parents:
            continue
        name = str(path.relative_to(PACKAGE))
        for line, value in key_literals(path.read_text(encoding="utf-8"), name in MESSAGE_MODULES):
            if value in ALLOWED.get(name, set()):
                used.add((name, value))
            else:
                hits.append(f"{name}:{line}: {value!r} is keys.{KEYS[value]}")
    assert not hits, "use flwr_multilevel.protocol.keys:\n" + "\n".join(hits)
    stale = {(n, v) for n, values in ALLOWED.items() for v in values} - used
    assert not stale, f"no longer needed in ALLOWED: {sorted(stale)}"


def test_the_leak_check_sees_literals_and_spares_docstrings():
    source = (
        '"""Uses "worker-id" in prose."""\n'
        "def f(config):\n"
        '    """Reads config["steps"]."""\n'
        '    return config["worker-id"], config["steps"], f"metric {1}-steps"\n'
    )
    assert key_literals(source, plain_words=False) == [(4, "worker-id")]
    assert key_literals(source, plain_words=True) == [(4, "steps"), (4, "worker-id")]


def test_the_message_modules_exist_and_every_key_is_one_constant():
    for name in [*MESSAGE_MODULES, *ALLOWED]:
        assert (PACKAGE / name).is_file(), name
    values = [v for n, v in vars(keys).items() if n.isupper() and isinstance(v, str)]
    assert len(values) == len(set(values))  # no key under two names
    for group in (keys.PER_WORKER, keys.ROUND_KEYS, keys.REPLY_METRICS):
        assert set(group) <= set(values)


def test_flowers_own_keys_are_the_ones_named():
    # what Flower's strategies put in a train config, and the metric they weight by
    arrays = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    grid = LocalGrid(cast(ClientApp, lambda message, context: message), 2)  # a stand-in app
    messages = list(FedProx(proximal_mu=0.1).configure_train(3, arrays, ConfigRecord(), grid))
    record = messages[0].content[keys.CONFIG]
    assert record[keys.SERVER_ROUND] == 3 and record[keys.PROXIMAL_MU] == 0.1
    assert isinstance(messages[0].content[keys.ARRAYS], ArrayRecord)
    assert FedAvg().weighted_by_key == keys.NUM_EXAMPLES
    aggregator = cast(FedAvg, weighting_aggregator(FedAvg(), 2))  # a FedAvg ends its own chain
    assert aggregator.weighted_by_key == keys.WORKER_WEIGHT
    assert set(grid.contexts[next(iter(grid.contexts))].node_config) == {
        keys.PARTITION_ID,
        keys.NUM_PARTITIONS,
    }
