"""The deployed hub's ServerApp, without starting Flower: its app folder, config and grid."""

from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
from flwr.app import Message
from flwr.serverapp import Grid
from omegaconf import OmegaConf

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from flwr_multilevel.deploy.hub_app import FastGrid, peer_layer, split_run_config
from flwr_multilevel.deploy.runner import APP_DIR
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import default_config, load_config, validate


def flat_keys(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def app_config() -> dict:
    with (APP_DIR / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["tool"]["flwr"]["app"]


def test_the_shipped_app_declares_every_key():
    """`flwr run` drops run-config keys the app does not declare: all must be there."""
    app = app_config()
    assert app["components"] == {
        "serverapp": "flwr_multilevel.deploy.hub_app:app",
        "clientapp": "flwr_multilevel.client_app:app",
    }
    declared = set(app["config"])
    expected = set(flat_keys(OmegaConf.to_container(default_config())))
    assert expected <= declared
    deploy_keys = {"hub-id", "listen", "peers", "ca", "cert", "key", "insecure"}
    deploy_keys |= {"gossip-timeout", "poll-s", "out", "config"}
    assert {k for k in declared - expected} == {f"deploy.{k}" for k in deploy_keys}


def test_the_app_defaults_are_the_default_experiment():
    cfg, deploy = split_run_config(app_config()["config"])
    assert OmegaConf.to_container(validate(cfg)) == OmegaConf.to_container(validate(load_config()))
    assert deploy["hub-id"] == 0 and deploy["insecure"] is False


def test_deploy_config_carries_what_flat_keys_cannot():
    original = load_config(
        None, ["strategy.name=FedProx", "strategy.options={proximal_mu: 0.1}", "hubs.workers=[1,2]"]
    )
    run_config = {**app_config()["config"], "deploy.config": OmegaConf.to_yaml(original)}
    cfg, _ = split_run_config(run_config)
    assert cfg.strategy.options.proximal_mu == 0.1
    assert list(cfg.hubs.workers) == [1, 2] and cfg.strategy.name == "FedProx"
    with pytest.raises(ConfigError, match="nonsense"):
        split_run_config({"deploy.config": "nonsense: 1"})


def test_peer_layer_needs_tls_files_or_an_explicit_opt_out():
    with pytest.raises(ConfigError, match="deploy.ca"):
        peer_layer({"listen": "127.0.0.1:0"}, np.eye(1), 0)
    with pytest.raises(ConfigError, match="deploy.peers"):
        peer_layer({"listen": "127.0.0.1:0", "insecure": True}, np.full((2, 2), 0.5), 0)
    layer = peer_layer({"listen": "127.0.0.1:0", "insecure": True}, np.eye(1), 0)
    layer.close(linger=0)


class SlowGrid:
    """Replies to message i become available at pull number i + 1 (a stand-in for a Grid)."""

    def __init__(self, count: int) -> None:
        self.count, self.pulls = count, 0

    def push_messages(self, messages):
        return [f"m{i}" for i in range(len(list(messages)))]

    def pull_messages(self, ids):
        self.pulls += 1
        ready = [i for i in ids if int(i[1:]) < self.pulls]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def stand_ins(*values: int) -> list[Message]:
    """Stand-ins for messages: FastGrid hands them to the inner grid, which only counts them."""
    return cast(list[Message], list(values))


def test_fast_grid_pulls_until_every_reply_came():
    inner = SlowGrid(3)
    replies = FastGrid(cast(Grid, inner), poll_s=0.001).send_and_receive(
        stand_ins(1, 2, 3), timeout=10
    )
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert inner.pulls == 3


def test_fast_grid_stops_at_the_timeout():
    inner = SlowGrid(3)
    inner.pull_messages = lambda ids: []  # type: ignore[method-assign]
    grid = FastGrid(cast(Grid, inner), poll_s=0.01)
    assert list(grid.send_and_receive(stand_ins(1), timeout=0.05)) == []


def test_the_experiment_deploy_keys_stay_with_the_experiment():
    run_config = {
        **app_config()["config"],
        "deploy.gossip_timeout": 7.0,
        "deploy.strict": True,
        "deploy.hub-id": 2,
    }
    cfg, deploy = split_run_config(run_config)
    assert cfg.deploy.gossip_timeout == 7.0 and cfg.deploy.strict is True
    assert deploy["hub-id"] == 2 and "gossip_timeout" not in deploy
    # the hub's own key, when given, replaces it (and peer_wait is at least as long)
    cfg, _ = split_run_config({"deploy.gossip-timeout": 900.0, "deploy.config": "deploy: {}"})
    assert cfg.deploy.gossip_timeout == 900.0 and cfg.deploy.peer_wait == 900.0
    cfg, _ = split_run_config({"deploy.gossip-timeout": "", "deploy.gossip_timeout": 8.0})
    assert cfg.deploy.gossip_timeout == 8.0


def test_fast_grid_tells_of_progress_and_of_the_call_in_flight():
    beats = []
    inner = SlowGrid(2)
    grid = FastGrid(
        cast(Grid, inner), poll_s=0.001, on_progress=lambda: beats.append(grid.busy_since)
    )
    list(grid.send_and_receive(stand_ins(1, 2), timeout=10))
    assert len(beats) == 1 + inner.pulls and set(beats) == {None}  # after each call returned
    seen = []

    def pull(ids):
        seen.append(grid.busy_since)
        return []

    inner.pull_messages = pull  # type: ignore[method-assign]
    grid.pull_messages(["m0"])
    assert seen[0] is not None and grid.busy_since is None


def test_fast_grid_skips_messages_the_superlink_did_not_take():
    inner = SlowGrid(2)
    inner.push_messages = lambda messages: ["m0", None, ""]  # type: ignore[method-assign]
    replies = FastGrid(cast(Grid, inner), poll_s=0.001).send_and_receive(
        stand_ins(1, 2, 3), timeout=10
    )
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]


def test_a_hub_whose_superlink_hangs_is_ended_with_the_reason():
    import threading
    import time

    from flwr_multilevel.deploy.hub_grid import SuperLinkWatch

    release = threading.Event()
    inner = SlowGrid(1)
    inner.pull_messages = lambda ids: release.wait(10) and []  # type: ignore[method-assign]
    grid = FastGrid(cast(Grid, inner), poll_s=0.001)
    lost: list[str] = []
    watch = SuperLinkWatch(grid, 0.3, lost.append, every=0.05).start()
    caller = threading.Thread(target=grid.pull_messages, args=(["m0"],))
    caller.start()
    deadline = time.monotonic() + 10
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    caller.join()
    watch.stop()
    assert lost == ["its SuperLink did not answer for 0.3 s (deploy.superlink_timeout): it is gone"]
