"""`flwr-multilevel collect`: hub folders of a deployment into the results folder of a run.

The hub folders are made here by the deployed hub's own code (``hub_app.run_hub``: MLL-SGD
with ``hub_ids=[d]`` and the networked peer layer on loopback), each hub in its own process
on an in-process grid of its workers, without SuperLinks; what `collect` makes of them
must equal `run` on the same config.
"""

import csv
import multiprocessing
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flwr_multilevel.cli.main import main
from flwr_multilevel.client_app import app as client_app
from flwr_multilevel.deploy.federation import free_port
from flwr_multilevel.deploy.hub_app import run_hub
from flwr_multilevel.engines.launch import launch
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.prepare import prepare
from flwr_multilevel.strategies.peer_config import format_peers
from tests.conftest import make_config

SETTING = ["hubs.count=2", "hubs.workers=2", "rounds=3", "tau=2", "q=1", "seed=4"]
SETTING += ["eval.train_examples=200", "eval.hubs=true"]
TIMED = {"elapsed_s", "eval_s", "wall_s"}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def run_hub_alone(d: int, sizes: list[int], run_config: dict) -> None:
    """Hub d as its ServerApp runs it, on an in-process grid of its own workers."""
    grid = LocalGrid(client_app, sizes[d])
    first = sum(sizes[:d])
    for k, context in enumerate(grid.contexts.values()):  # its workers, numbered across hubs
        context.node_config.update({"partition-id": first + k, "worker-id": first + k})
    run_hub(grid, run_config)


def run_hubs(output_dir: Path, overrides: list[str]) -> None:
    """Run every hub of the experiment as a deployed hub does, each in its own process."""
    cfg = make_config(output_dir.parent, overrides)
    cfg.output_dir = str(output_dir)
    sizes = [2, 2]
    peers = {d: f"127.0.0.1:{free_port()}" for d in range(2)}
    spawn = multiprocessing.get_context("spawn")  # a fresh process each, as on its own machine
    hubs = []
    for d in range(2):
        run_config = {
            "deploy.config": OmegaConf.to_yaml(cfg),
            "deploy.hub-id": d,
            "deploy.listen": peers[d],
            "deploy.peers": format_peers(peers),
            "deploy.insecure": True,
            "deploy.gossip-timeout": 60.0,
        }
        hubs.append(spawn.Process(target=run_hub_alone, args=(d, sizes, run_config)))
    try:
        for hub in hubs:
            hub.start()
        for hub in hubs:
            hub.join(300)
    finally:
        for hub in hubs:  # only those this test started, by their process
            if hub.is_alive():
                hub.terminate()
                hub.join(10)
    assert [hub.exitcode for hub in hubs] == [0, 0]


@pytest.fixture(scope="module")
def hubs_and_run(tmp_path_factory) -> tuple[Path, Path]:
    """(a folder of hub-0/ and hub-1/ as the hubs wrote them, `run`'s results of the same)."""
    tmp = tmp_path_factory.mktemp("collect")
    run_hubs(tmp / "hubs", SETTING)
    launch(prepare(make_config(tmp / "sim", SETTING)))
    return tmp / "hubs", tmp / "sim" / "run"


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flwr-multilevel: error: "), err
    return lines[0]


def test_collect_makes_the_results_folder_of_run(hubs_and_run, tmp_path, capsys):
    hubs, sim = hubs_and_run
    folder = tmp_path / "results"
    shutil.copytree(hubs, folder)  # as the operator gathers the sites' folders
    assert main(["collect", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "final: accuracy" in printed and f"results: {folder}" in printed
    got, want = rows(folder / "history.csv"), rows(sim / "history.csv")
    assert list(got[0]) == list(want[0]) and len(got) == len(want) == 4  # rounds 0..3
    for a, b in zip(got, want, strict=True):
        for key in set(a) - TIMED:
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
    assert list(rows(folder / "rounds.csv")[0]) == list(rows(sim / "rounds.csv")[0])
    for name in ("network.json", "summary.json", "config.yaml", "accuracy_vs_time_step.png"):
        assert (folder / name).is_file(), name
    # once collected, the folder holds a run: again only with --overwrite
    assert main(["collect", str(folder)]) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert main(["collect", str(folder), "--overwrite"]) == 0


def test_a_hub_that_did_not_finish_is_named(hubs_and_run, tmp_path, capsys):
    folder = tmp_path / "results"
    shutil.copytree(hubs_and_run[0], folder)
    (folder / "hub-1" / "summary.json").unlink()
    assert main(["collect", str(folder)]) == 1
    assert "hub 1 failed: it did not finish" in capsys.readouterr().err


def test_bad_folders_are_one_line_and_status_2(hubs_and_run, tmp_path, capsys):
    assert main(["collect", str(tmp_path / "nothing")]) == 2
    assert "FOLDER: expected hub-<d>/ folders" in one_error_line(capsys)
    folder = tmp_path / "results"
    shutil.copytree(hubs_and_run[0], folder)
    shutil.rmtree(folder / "hub-0")
    assert main(["collect", str(folder)]) == 2
    assert "FOLDER: expected hub-0 to hub-1, got hub-1" in one_error_line(capsys)
    shutil.copytree(hubs_and_run[0] / "hub-0", folder / "hub-0")
    config = folder / "hub-0" / "config.yaml"
    config.write_text(config.read_text().replace("seed: 4", "seed: 5"))
    assert main(["collect", str(folder)]) == 2
    assert "hub-1 has another 'seed' than hub-0" in one_error_line(capsys)
