"""The Flower-form baseline baselines/mll_sgd: its layout, configs and a real run of its apps."""

import importlib
import re
from pathlib import Path

import pytest
import tomllib
import yaml
from flwr.app import Context, RecordDict
from flwr.cli.config_utils import load_and_validate
from flwr.cli.utils import validate_project_name
from flwr.common.config import flatten_dict, fuse_dicts, parse_config_args

from flwr_multilevel.engines.launch import launch
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.config import default_config, load_config, to_run_config, validate
from flwr_multilevel.experiment.prepare import prepare

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "baselines" / "mll_sgd"
PKG = "flwr_multilevel.baselines.mll_sgd.mll_sgd"  # as installed (and as flwr run sees mll_sgd)
CONFS = sorted((BASELINE / "conf").rglob("*.toml"))


def app_config() -> dict:
    with (BASELINE / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)
    return flatten_dict(project["tool"]["flwr"]["app"]["config"])


def module(name: str):
    return importlib.import_module(f"{PKG}.{name}")


def test_the_baseline_has_flowers_layout_and_readme_front_matter():
    # the files Flower's baseline CI (test-baseline-structure.sh) requires
    for name in ("client_app", "dataset", "model", "server_app", "strategy", "utils"):
        assert (BASELINE / "mll_sgd" / f"{name}.py").is_file(), name
    # what flwr run checks before it builds the app bundle
    project, _ = load_and_validate(BASELINE / "pyproject.toml", check_module=True)
    validate_project_name(project["project"]["name"], "[project].name")
    flwr = project["tool"]["flwr"]
    assert flwr["app"]["publisher"]
    assert flwr["app"]["components"] == {
        "serverapp": "mll_sgd.server_app:app",
        "clientapp": "mll_sgd.client_app:app",
    }
    assert "federations" not in flwr  # flwr run would migrate it and rewrite the file
    readme = (BASELINE / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", readme, re.DOTALL)
    assert match, "README must open with YAML front matter"
    front = yaml.safe_load(match.group(1))
    assert {"title", "url", "labels", "dataset"} <= set(front)
    assert front["url"] == "https://arxiv.org/abs/2007.13819"
    for section in (
        "About this baseline",
        "Experimental Setup",
        "Environment Setup",
        "Running the Experiments",
        "Expected Results",
    ):
        assert f"## {section}" in readme, section


def run_baseline(tmp_path, num_nodes: int, **overrides) -> Path:
    """Run the baseline's ServerApp main with its ClientApp on a LocalGrid; return the folder."""
    client, server = module("client_app"), module("server_app")
    cfg = {**app_config(), "output_dir": str(tmp_path / "out"), **overrides}
    grid = LocalGrid(client.app, num_nodes, run_config=cfg)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg)
    server.main(grid, context)
    return Path(cfg["output_dir"])


def test_the_server_and_client_apps_train_and_write_results(tmp_path):
    utils = module("utils")
    out = run_baseline(tmp_path, 9, rounds=2)
    history = utils.read_history(out)
    assert [row["round"] for row in history] == [0, 2]  # q * tau = 8 time steps: round 2
    assert history[-1]["accuracy"] > history[0]["accuracy"] + 0.2
    assert history[-1]["loss"] < history[0]["loss"]
    results = (out / "results.json").read_text()
    assert '"consensus"' in results and '"hub2-train-loss"' in results
    assert (out / "final_model.pt").is_file() and (out / "run_config.json").is_file()


def test_a_slot_budget_stops_the_run_and_the_last_round_is_scored(tmp_path):
    utils = module("utils")
    overrides = {"rounds": 10, "max_time_slots": 12, "hubs.count": 2, "hubs.workers": 2, "q": 2}
    history = utils.read_history(run_baseline(tmp_path, 4, **overrides))
    assert [(r["round"], r["time_slot"]) for r in history] == [(0, 0), (2, 8), (3, 12)]


def test_the_baseline_matches_the_library_engine_on_the_same_experiment(tmp_path):
    # the same experiment through flwr-multilevel's own engine (in-process)
    exp = prepare(
        validate(
            load_config(
                None,
                [
                    "simulation.backend=inprocess",
                    f"output_dir={tmp_path / 'engine'}",
                    "rounds=4",
                    "hubs.count=3",
                    "hubs.workers=3",
                    "hubs.graph=path",
                    "rates.distribution=uniform",
                    "weighting=data_size",
                    "data.partition=unequal",
                    "eval.hubs=false",
                ],
            )
        )
    )
    engine = launch(exp)
    out = run_baseline(tmp_path, 9, **{"rounds": 4, "data.partition": "unequal"})
    last = module("utils").read_history(out)[-1]
    assert last["round"] == engine["round"] == 4
    assert last["accuracy"] == pytest.approx(engine["accuracy"], abs=1e-9)
    assert last["loss"] == pytest.approx(engine["loss"], rel=1e-5)


@pytest.mark.parametrize("path", CONFS, ids=[str(p.relative_to(BASELINE)) for p in CONFS])
def test_every_run_config_file_uses_only_the_apps_keys(path):
    # what flwr run does with --run-config <file>: parse it, then fuse it with the app's keys
    overrides = parse_config_args([str(path)])
    fused = fuse_dicts(app_config(), overrides)  # raises on a key the app does not declare
    strategy = module("strategy").mll_sgd_strategy(fused)  # and the network it describes is valid
    assert strategy.num_workers == module("utils").num_workers(fused)


def test_the_run_configs_are_the_paper_figures():
    utils = module("utils")
    papers = sorted((REPO / "baselines" / "paper").glob("*.yaml"))
    assert len(CONFS) >= 16 and papers
    for paper in papers:
        spec = yaml.safe_load(paper.read_text())
        for label, run in spec["runs"].items():
            path = BASELINE / "conf" / paper.stem / f"{utils.config_name(label)}.toml"
            assert path.is_file(), f"{paper.name}: no run config for {label!r}"
            written = parse_config_args([str(path)])
            expected = utils.paper_run_config(spec["common"], run)
            assert {k: written[k] for k in expected} == expected, path


def test_bad_settings_name_their_key():
    strategy = module("strategy")
    with pytest.raises(ValueError, match="^weighting: expected"):
        strategy.mll_sgd_strategy({**app_config(), "weighting": "size"})
    with pytest.raises(ValueError, match="^hubs.workers: expected"):
        strategy.mll_sgd_strategy({**app_config(), "hubs.workers": "3,x"})
    with pytest.raises(ValueError, match="^rates.values: expected 9 rates"):
        strategy.mll_sgd_strategy(
            {**app_config(), "rates.distribution": "explicit", "rates.values": "1,1"}
        )
    with pytest.raises(ValueError, match="^time_steps: expected"):
        module("utils").num_rounds({**app_config(), "time_steps": 0})


def test_the_apps_keys_are_default_yamls():
    keys = list(app_config())
    assert keys == list(module("utils").APP_KEYS)  # paper_run_config writes the app's keys
    assert set(keys) <= set(to_run_config(default_config()))
