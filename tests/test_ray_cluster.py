"""A run attached to a Ray cluster someone else started (`simulation.ray_address`)."""

import pytest
import torch

from flwr_multilevel import ConfigError
from flwr_multilevel.cli.main import main
from flwr_multilevel.engines.simulation import ray_init_args
from flwr_multilevel.experiment.config import load_config, validate

from .helpers import read_csv
from .ray_cluster import RayCluster

COMMON = [
    "rounds=4",
    "q=2",
    "hubs.workers=[2,3,3]",
    "rates.distribution=two_level",
    "rates.slow_fraction=0.5",
    "rates.p_slow=0.3",
    "rates.p_fast=1.0",
    "eval.hubs=true",
    "simulation.cpus_per_worker=1",
]
RUN_ACTORS = ("GroupActor", "ClientAppActor")  # grouped calls, or Flower's own actor


@pytest.mark.parametrize(
    "address", ["auto", "10.0.0.5:6379", "head-1.cluster.local:6379", "[::1]:6379"]
)
def test_a_ray_address_is_auto_or_host_port(address):
    cfg = validate(load_config(None, [f"simulation.ray_address='{address}'"]))
    assert ray_init_args(cfg.simulation.ray_address, 0.5) == {"address": address}


@pytest.mark.parametrize("address", ["ray://head:10001", "head", "head:0", "head:port", "a b:1"])
def test_other_ray_addresses_are_refused(address):
    with pytest.raises(ConfigError, match="simulation.ray_address: expected empty, auto"):
        validate(load_config(None, [f"simulation.ray_address={address}"]))


@pytest.mark.parametrize("backend", ["inprocess", "batched"])
def test_backends_without_ray_refuse_an_address(backend):
    with pytest.raises(ConfigError, match="simulation.ray_address: attaching to a Ray cluster"):
        validate(
            load_config(None, [f"simulation.backend={backend}", "simulation.ray_address=auto"])
        )


def _same_rows(left, right, skip):
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - skip:
            if key.endswith("_train_loss"):  # a metric Flower's FedAvg sums in reply order
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-12), key
            else:
                assert a[key] == b[key], key


@pytest.mark.simulation
def test_a_run_on_a_two_node_cluster_equals_in_process_and_leaves_no_actors(tmp_path):
    local = tmp_path / "local"
    assert main(["run", *COMMON, "simulation.backend=inprocess", f"output_dir={local}"]) == 0
    with RayCluster(nodes=2, cpus=1) as cluster:
        before = {a["id"] for a in cluster.state()["actors"]}
        attached = tmp_path / "attached"
        args = [f"simulation.ray_address={cluster.address}", f"output_dir={attached}"]
        assert main(["run", *COMMON, "simulation.backend=ray", *args]) == 0
        after = cluster.state()
    # the same numbers, bit for bit (but the reply-order sum of the hubs' train-loss
    # metric), wherever the actors ran
    _same_rows(read_csv(attached / "history.csv"), read_csv(local / "history.csv"), {"elapsed_s"})
    _same_rows(read_csv(attached / "rounds.csv"), read_csv(local / "rounds.csv"), {"seconds"})
    models = [torch.load(f / "hub_models.pt")["hubs"] for f in (attached, local)]
    for a, b in zip(*models, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the run's actors ran on both nodes and none is left; the cluster still runs
    run_actors = [a for a in after["actors"] if a["id"] not in before]
    assert run_actors and {a["class"] for a in run_actors} <= set(RUN_ACTORS)
    alive = [n["id"] for n in after["nodes"] if n["alive"]]
    assert len(alive) == 2 and {a["node"] for a in run_actors} == set(alive)
    assert all(a["state"] == "DEAD" and not a["detached"] for a in run_actors)
