"""`compare --parallel`: a comparison's runs as Ray tasks, equal to the runs made one by one."""

import os

import pytest
import torch

from flwr_multilevel import ConfigError
from flwr_multilevel.cli.compare import SweepOptions, load_comparison, run_comparison, sweep
from flwr_multilevel.cli.main import main

from .helpers import read_csv

FAST = ["time_steps=16", "eval.hubs=true"]
RUNS = ["local_sgd", "hl_sgd", "mll_sgd"]


def _same_rows(a_rows, b_rows, skip):
    assert len(a_rows) == len(b_rows)
    for a, b in zip(a_rows, b_rows, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - {skip}:
            assert a[key] == b[key], key


def _equal_runs(left, right, labels, table=True):
    for label in labels:
        for name, skip in (("history.csv", "elapsed_s"), ("rounds.csv", "seconds")):
            _same_rows(read_csv(left / label / name), read_csv(right / label / name), skip)
        models = [torch.load(f / label / "hub_models.pt")["hubs"] for f in (left, right)]
        for x, y in zip(*models, strict=True):
            assert all(torch.equal(x[k], y[k]) for k in x)
    if not table:
        return
    tables = [read_csv(f / "comparison.csv") for f in (left, right)]
    for table_rows in tables:
        for row in table_rows:
            row.pop("wall_s")
    assert tables[0] == tables[1]


@pytest.mark.simulation
def test_a_parallel_sweep_equals_the_runs_made_one_by_one(tmp_path, capsys):
    one_by_one, swept = tmp_path / "seq", tmp_path / "par"
    assert (
        main(["compare", *RUNS, *FAST, "simulation.backend=inprocess", "--out", str(one_by_one)])
        == 0
    )
    capsys.readouterr()
    # the sweep's runs keep the default backend, ray: they run in-process inside their tasks
    assert main(["compare", *RUNS, *FAST, "--parallel", "2", "--out", str(swept)]) == 0
    printed = capsys.readouterr()
    assert "run on the inprocess backend inside their sweep task" in printed.err
    assert "[sweep " in printed.err and "[3/3] mll_sgd: time step 16 done" in printed.err
    assert not (swept / sweep.MARKER).exists()
    _equal_runs(one_by_one, swept, RUNS)
    # finished runs are kept: a second sweep into the folder runs nothing, starts no Ray
    assert main(["compare", *RUNS, *FAST, "--parallel", "2", "--out", str(swept)]) == 0
    assert printed.err.count("finished before, kept") == 0
    assert capsys.readouterr().err.count("finished before, kept") == 3


def test_finished_runs_are_kept_without_starting_ray(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    runs = [*FAST, "simulation.backend=inprocess"]
    run_comparison(load_comparison(RUNS[:2], runs), out)

    def no_ray(*args, **kwargs):
        raise AssertionError("a sweep started")

    monkeypatch.setattr(sweep, "run_sweep", no_ray)
    run_comparison(load_comparison(RUNS[:2], runs), out, sweep=SweepOptions(parallel=2))


class _Queue:
    def __init__(self):
        self.items = []

    def put_nowait(self, item):
        self.items.append(item)


def test_a_task_whose_node_cannot_see_the_folder_sends_the_run_back(tmp_path):
    """Without the comparison folder on its node, a task runs in a temporary folder."""
    out = tmp_path / "cmp"
    comparison = load_comparison(["mll_sgd"], [*FAST, "simulation.backend=inprocess"])
    run_comparison(comparison, out)  # the reference, in place
    spec = comparison.runs[0]
    queue = _Queue()
    summary = sweep.run_task(spec.cfg, 0, os.getcwd(), str(tmp_path / "absent"), queue)
    assert queue.items and queue.items[0][0] == 0
    elsewhere = tmp_path / "back" / "mll_sgd"
    sweep.unpack(summary.pop("shipped"), elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(
        p.name for p in (out / "mll_sgd").iterdir()
    )
    _equal_runs(out, tmp_path / "back", ["mll_sgd"], table=False)


def test_a_sweep_config_runs_ray_runs_in_process_and_asks_for_its_resources(config):
    cfg = config("simulation.backend=ray", "simulation.threads=2", "simulation.device=cuda")
    swept = sweep.sweep_config(cfg)
    assert swept.simulation.backend == "inprocess" and cfg.simulation.backend == "ray"
    assert sweep.task_resources(swept, 0.25, 0) == {"num_cpus": 2, "num_gpus": 0.25}
    assert sweep.task_resources(config(), 0.25, 4) == {"num_cpus": 1, "num_gpus": 0}


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--parallel", "0"], "--parallel"),
        (["--ray-address", "ray://x:1"], "--ray-address"),
        (["--parallel", "2", "--gpus-per-run", "1.5"], "--gpus-per-run"),
    ],
)
def test_bad_sweep_options_exit_2_with_one_line(tmp_path, capsys, args, key):
    assert main(["compare", "mll_sgd", *FAST, *args, "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith(f"flwr-multilevel: error: {key}:")
    with pytest.raises(ConfigError):
        SweepOptions(parallel=-2).check()
