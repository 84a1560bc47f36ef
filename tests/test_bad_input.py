"""Invalid input stops before training with one line on stderr and exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from flwr_multilevel.cli import main


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["hubs.cnt=3"], "hubs.cnt"),
        (["tau=0"], "tau"),
        (["q=0"], "q"),
        (["rounds=-1"], "rounds"),
        (["lr=-0.1"], "lr"),
        (["rates.distribution=fixed", "rates.p=1.5"], "rates.p"),
        (["rates.distribution=fixed", "rates.p=0"], "rates.p"),
        (["rates.distribution=explicit", "rates.values=[1,1]"], "rates.values"),
        (
            ["rates.distribution=explicit", "hubs.count=1", "hubs.workers=2", "rates.values=[1,0]"],
            "rates.values",
        ),
        (["hubs.workers=[2,0,3]"], "hubs.workers"),
        (["hubs.count=0"], "hubs.count"),
        (["hubs.workers=2000"], "hubs.workers"),
        (["hubs.graph=ring", "hubs.count=2"], "hubs.graph"),
        (["hubs.graph=nonsense"], "hubs.graph"),
        (["weighting=bysize"], "weighting"),
        (["strategy.name=FedNope"], "strategy.name"),
        (["strategy.options.nope=1"], "strategy.options"),
        (["data.name=cifar"], "data.name"),
        (["model.name=resnet"], "model.name"),
        (["lr=0.1", "tau"], "tau"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(args, key, tmp_path, capsys):
    status = main(["run", *args, f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"flwr-multilevel: error: {key}")
    assert not (tmp_path / "out").exists()  # stopped before anything was written


def test_disconnected_graph_file(tmp_path, capsys):
    graph = tmp_path / "g.txt"
    graph.write_text("0 1\n2 3\n")
    assert main(["run", "hubs.count=4", f"hubs.graph={graph}"]) == 2
    err = capsys.readouterr().err
    assert "hubs.graph: expected a connected hub graph" in err and err.count("\n") == 1


def test_matrix_file_failing_the_checks(tmp_path, capsys):
    matrix = tmp_path / "h.txt"
    np.savetxt(matrix, np.array([[0.6, 0.3, 0.0], [0.3, 0.3, 0.5], [0.0, 0.3, 0.5]]))
    assert main(["run", "hubs.graph=path", f"hubs.mixing={matrix}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwr-multilevel: error: hubs.mixing: expected every column to sum to 1")


def test_existing_results_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "history.csv").write_text("round\n")
    assert main(["run", "simulation.backend=inprocess", f"output_dir={tmp_path}"]) == 2
    assert "output_dir: expected a new folder" in capsys.readouterr().err
    assert (tmp_path / "history.csv").read_text() == "round\n"


def test_missing_config_file(capsys):
    assert main(["run", "no/such.yaml"]) == 2
    assert "config: expected a YAML file" in capsys.readouterr().err


def test_real_process_prints_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "flwr_multilevel.cli", "run", "q=0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "flwr-multilevel: error: q: expected an integer in [1, 10000000], got 0"
