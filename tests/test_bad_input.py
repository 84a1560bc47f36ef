"""Invalid input stops before training with one line on stderr and exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from flwr_multilevel.cli.main import main


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
        [sys.executable, "-m", "flwr_multilevel", "run", "q=0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "flwr-multilevel: error: q: expected an integer in [1, 10000000], got 0"
    )


# ---- one schema, every key under `flwr run .` ----------------------------------------------

import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import cast  # noqa: E402

import tomllib  # noqa: E402
import yaml  # noqa: E402
from flwr.common.config import flatten_dict  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from flwr_multilevel.cli.compare import load_comparison, slug  # noqa: E402
from flwr_multilevel.errors import ConfigError  # noqa: E402
from flwr_multilevel.experiment import config as config_module  # noqa: E402
from flwr_multilevel.experiment import data, models, schema  # noqa: E402
from flwr_multilevel.experiment.config import (  # noqa: E402
    checked_run_config,
    default_config,
    from_run_config,
    load_config,
    to_run_config,
    validate,
    warnings_of,
)
from flwr_multilevel.model import mixing, rates, topology  # noqa: E402
from flwr_multilevel.run.results import ResultsFolder, check_output_dir, plan_output_dir  # noqa: E402
from flwr_multilevel.strategies import one_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _app_config():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def _yaml_keys():
    raw = yaml.safe_load((ROOT / "flwr_multilevel" / "default.yaml").read_text())
    raw["strategy"]["options"] = ""  # one run-config key: a "key=value,..." string
    return set(flatten_dict({k: ("" if v is None else v) for k, v in _nulls(raw).items()}))


def _nulls(node):
    return {
        k: (_nulls(v) if isinstance(v, dict) else ("" if v is None else v)) for k, v in node.items()
    }


def test_pyproject_declares_exactly_the_keys_of_default_yaml():
    assert set(_app_config()) == _yaml_keys()


def test_pyproject_table_is_the_default_config():
    cfg = from_run_config(_app_config())
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(default_config())
    assert to_run_config(default_config()) == _app_config()


def test_schema_defaults_are_default_yaml():
    raw = yaml.safe_load((ROOT / "flwr_multilevel" / "default.yaml").read_text())
    typed = OmegaConf.to_container(OmegaConf.structured(schema.Config))
    assert typed == OmegaConf.to_container(OmegaConf.merge(schema.Config, raw))
    assert typed == OmegaConf.to_container(default_config())


def test_schema_names_match_the_modules():
    assert schema.GRAPHS == topology.GRAPHS
    assert schema.MIXINGS == mixing.MIXINGS
    assert schema.DATASETS == data.DATASETS
    assert schema.PARTITIONS == data.PARTITIONS
    assert schema.MODELS == models.MODELS
    assert schema.DISTRIBUTIONS == rates.DISTRIBUTIONS


def test_run_config_sets_every_key():
    run_config = dict(_app_config())
    run_config.update(
        {
            "hubs.workers": "2,3",
            "hubs.count": 2,
            "rates.distribution": "explicit",
            "rates.values": "0.5,1,1,0.5,1",
            "strategy.name": "FedProx",
            "strategy.options": "proximal_mu=0.1,fraction_train=1.0",
            "simulation.threads": 2,
            "simulation.backend": "inprocess",  # batched runs FedAvg only (engines.support)
            "theory.L": 1.5,
        }
    )
    cfg = validate(from_run_config(run_config))
    assert cfg.hubs.workers == [2, 3] and cfg.rates["values"] == [0.5, 1, 1, 0.5, 1]
    assert cfg.strategy.options == {"proximal_mu": 0.1, "fraction_train": 1.0}
    assert cfg.simulation.threads == 2 and cfg.theory.L == 1.5 and cfg.time_steps is None


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("hubs.mixing", "/etc/passwd", "hubs.mixing"),
        ("hubs.graph", "/etc/hosts", "hubs.graph"),
        ("seed", "${oc.env:HOME}", "seed"),
        ("data.root", "${oc.env:HOME}", "data.root"),
        ("tau", "${rounds}", "tau"),
        ("strategy.options", "proximal_mu=-1", "strategy.options.proximal_mu"),
        ("strategy.options", "fraction_train=2", "strategy.options.fraction_train"),
        ("hubs.cnt", 3, "hubs.cnt"),
    ],
)
def test_flwr_run_config_is_refused_in_one_line(key, value, field, monkeypatch):
    logged = []
    monkeypatch.setattr(one_line, "log", lambda *args, **_: logged.append(args[1] % args[2:]))
    with pytest.raises(ConfigError) as err:
        checked_run_config({**_app_config(), key: value})
    text = str(err.value)
    assert text.startswith(f"{field}: ") and "\n" not in text
    assert "root:x:" not in text and os.environ.get("HOME", "/root") not in text.split("got")[-1]
    assert logged == [f"flwr-multilevel: error: {text}"]


def test_validate_leaves_strings_unresolved_and_normalises_lists():
    cfg = validate(load_config(None, ["hubs.count=2", "hubs.workers=3,4", "rates.values=0.5"]))
    assert cfg.hubs.workers == [3, 4] and cfg.rates["values"] == [0.5]
    with pytest.raises(ConfigError, match="^output_dir: expected a plain value"):
        merged = OmegaConf.merge(default_config(), {"output_dir": "${oc.env:HOME}"})
        validate(cast(DictConfig, merged))  # a DictConfig merged with a dict is one


def test_new_keys_threads_and_batched_backend():
    cfg = validate(load_config(None, ["simulation.threads=4", "simulation.backend=batched"]))
    assert cfg.simulation.threads == 4
    with pytest.raises(ConfigError, match=r"^simulation.threads: expected an integer in \[0"):
        validate(load_config(None, ["simulation.threads=-1"]))


def test_warnings_are_one_line_each(monkeypatch):
    cfg = load_config(None, ["lr=50", "rounds=1", "q=2", "strategy.options.fraction_train=0.5"])
    found = warnings_of(cfg)
    assert [w.split(":")[0] for w in found] == ["lr", "q", "strategy.options.fraction_train"]
    assert all("\n" not in w for w in found)
    logged = []
    monkeypatch.setattr(config_module, "log", lambda *args: logged.append(args[1] % args[2:]))
    validate(cfg)
    assert logged == [f"flwr-multilevel: warning: {w}" for w in found]
    assert warnings_of(default_config()) == []


# ---- the user's files ------------------------------------------------------------------------


def test_folder_with_a_runs_files_but_no_history_is_not_touched(tmp_path, capsys):
    (tmp_path / "summary.json").write_text("mine")
    (tmp_path / "rounds.csv").write_text("mine too")
    assert main(["run", "simulation.backend=inprocess", f"output_dir={tmp_path}"]) == 2
    assert "output_dir: expected a new folder" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_text() == "mine"
    assert (tmp_path / "rounds.csv").read_text() == "mine too"


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "history.csv").write_text("old")
    recorder = ResultsFolder(tmp_path, overwrite=True)
    recorder.append_row("history.csv", {"round": 1})
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "history.csv").read_text().splitlines() == ["round", "1"]


def test_no_symbolic_link_is_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    run = tmp_path / "run"
    recorder = ResultsFolder(run)
    (run / "rounds.csv").symlink_to(outside)
    with pytest.raises(OSError):
        recorder.append_row("rounds.csv", {"round": 1})
    (run / "summary.json").symlink_to(outside)
    recorder.write_json("summary.json", {"a": 1})  # replaces the link, not its target
    assert outside.read_text() == "keep" and not (run / "summary.json").is_symlink()
    link = tmp_path / "link"
    link.symlink_to(run)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_output_dir(link)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "history.csv").symlink_to(outside)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_output_dir(fresh, overwrite=True)


def test_run_folders_are_unique_and_not_created(tmp_path):
    names = {plan_output_dir(None, base=str(tmp_path)) for _ in range(200)}
    assert len(names) == 200 and not any(path.exists() for path in names)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["..", "b"], "with a letter or digit, got '..'"),
        (["A B", "a_b"], "map to one folder 'a_b'"),
        (["Run", "run!"], "map to one folder 'run'"),
        (["x" * 101, "b"], "1 to 100 characters"),
    ],
)
def test_unsafe_comparison_labels_are_refused(labels, message, tmp_path):
    runs = "\n".join(f"  {label!r}: {{tau: {i + 1}}}" for i, label in enumerate(labels))
    spec = tmp_path / "cmp.yaml"
    spec.write_text(f"runs:\n{runs}\n")
    with pytest.raises(ConfigError, match=message):
        load_comparison([str(spec)])
    assert slug("..") == "run" and slug(".hidden") == "hidden"


@pytest.mark.parametrize("taken", ["hub-0", "federation", "history.csv"])
def test_deploy_checks_its_folder_before_starting_anything(tmp_path, capsys, taken):
    target = tmp_path / "out"
    (target / taken).parent.mkdir(parents=True, exist_ok=True)
    if "." in taken:
        (target / taken).write_text("mine")
    else:
        (target / taken).mkdir()
    before = sorted(p.name for p in target.rglob("*"))
    assert main(["deploy", f"output_dir={target}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwr-multilevel: error: output_dir: expected a new folder")
    assert err.count("\n") == 1 and taken in err
    assert sorted(p.name for p in target.rglob("*")) == before
