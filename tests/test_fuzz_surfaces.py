"""Fuzz, the contract of test_fuzz.py on more surfaces (issue 17).

Every strategy's options against the hubs' sizes, ``config --run-config``
strings, Flower App folders with broken ``pyproject.toml``, ``compare``
targets, and ``run --resume`` folders. Every case must end with exit status
2, exactly one ``flwr-multilevel: error:`` line on stderr, no traceback, and
nothing written or changed (the folders are compared before and after).
Cases are generated deterministically (``random.Random(SEED)``) and fail in
validation: milliseconds each.
"""

import json
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flwr_multilevel.cli.main import main
from flwr_multilevel.deploy.hub_app import run_hub
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import default_config, to_run_config
from flwr_multilevel.run.results import RUN_FILES

from .test_fuzz import _assert_refused

SEED = 17
RNG = random.Random(SEED)
COMMANDS = ["config", "config", "run", "theory"]


def _sizes() -> tuple[list[str], int]:
    """Random hub sizes as overrides, and the smallest hub's size."""
    count = RNG.randint(1, 4)
    sizes = [RNG.randint(1, 9) for _ in range(count)]
    return [f"hubs.count={count}", f"hubs.workers=[{','.join(map(str, sizes))}]"], min(sizes)


def _strategy_cases():
    """(overrides, key at fault) of strategy options no hub of the config can meet."""
    cases = []
    minimums = ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes")
    for name in ("FedAvg", "FedProx", "FedAdam", "FedMedian", "FedTrimmedAvg", "Krum", "Bulyan"):
        for _ in range(3):
            hubs, n = _sizes()
            key = RNG.choice(minimums)
            value = n + RNG.choice([1, 2, 10, 100, 10**6])
            if name in ("Krum", "Bulyan") and n < 3:
                hubs, n = ["hubs.count=1", "hubs.workers=9"], 9
                value = RNG.choice([10, 11, 100])
            options = [f"strategy.options.{key}={value}"]
            if name == "FedProx":
                options.append("strategy.options.proximal_mu=0.1")
            cases.append(([f"strategy.name={name}", *hubs, *options], f"strategy.options.{key}"))
    for name, times, plus in (("Krum", 2, 3), ("MultiKrum", 2, 3), ("Bulyan", 4, 3)):
        for _ in range(8):  # f too large for the smallest hub
            hubs, n = _sizes()
            if n < plus:
                cases.append(([f"strategy.name={name}", *hubs], "hubs.workers"))
                continue
            f = (n - plus) // times + 1 + RNG.choice([0, 0, 1, 5, 1000])
            option = f"strategy.options.num_malicious_nodes={f}"
            cases.append(
                ([f"strategy.name={name}", *hubs, option], "strategy.options.num_malicious_nodes")
            )
    for _ in range(8):  # MultiKrum selecting more workers than a hub has
        hubs, n = _sizes()
        if n < 3:  # (smaller hubs fail Krum's own n >= 2f + 3 first)
            hubs, n = ["hubs.count=2", f"hubs.workers=[{n + 3},9]"], n + 3
        select = n + RNG.choice([1, 2, 97])
        option = f"strategy.options.num_nodes_to_select={select}"
        cases.append(
            (["strategy.name=MultiKrum", *hubs, option], "strategy.options.num_nodes_to_select")
        )
    rates = [
        ("FedAdam", "eta"),
        ("FedYogi", "eta"),
        ("FedAdagrad", "eta"),
        ("FedAdam", "eta_l"),
        ("FedAvgM", "server_learning_rate"),
        ("FedProx", "proximal_mu"),
        ("QFedAvg", "client_learning_rate"),
        ("QFedAvg", "q"),
        ("FedYogi", "tau"),
    ]
    for name, key in rates:  # finite, yet every update overflows
        for huge in RNG.sample(["1e300", "1e30", "1e7", "1.7976931348623157e308"], 2):
            options = [f"strategy.options.{key}={huge}"]
            if name == "QFedAvg" and key != "client_learning_rate":
                options.append("strategy.options.client_learning_rate=0.1")
            if name == "FedProx" and key != "proximal_mu":
                options.append("strategy.options.proximal_mu=0.1")
            cases.append(([f"strategy.name={name}", *options], f"strategy.options.{key}"))
    for name in ("FedXgbBagging", "FedXgbCyclic"):
        for extra in ([], ["hubs.workers=1"], ["strategy.options.fraction_train=0.5"]):
            cases.append(([f"strategy.name={name}", *extra], "strategy.name"))
    for tau in (1, 2, 4, 7, 1000):  # time steps past the round cap (10^7 rounds)
        steps = tau * 10**7 + RNG.choice([1, tau, 10**9])
        cases.append(([f"tau={tau}", f"time_steps={min(steps, 10**12)}"], "time_steps"))
    return cases


STRATEGY_CASES = _strategy_cases()


@pytest.mark.parametrize(("args", "key"), STRATEGY_CASES)
def test_a_rule_the_hubs_cannot_meet_is_refused(args, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = random.Random(repr(args)).choice(COMMANDS)  # order-independent
    argv = [command, *args] + ([f"output_dir={tmp_path / 'out'}"] if command == "run" else [])
    line = _assert_refused(capsys, argv, [tmp_path])
    assert line.startswith(f"flwr-multilevel: error: {key}: "), line


@pytest.mark.parametrize(
    "args",
    [
        ["strategy.name=Krum", "hubs.workers=3"],
        ["strategy.name=Krum", "hubs.workers=5", "strategy.options.num_malicious_nodes=1"],
        ["strategy.name=MultiKrum", "hubs.workers=4", "strategy.options.num_nodes_to_select=4"],
        ["strategy.name=Bulyan", "hubs.workers=7", "strategy.options.num_malicious_nodes=1"],
        ["strategy.name=Bulyan", "hubs.count=2", "hubs.workers=[3,8]"],
        ["strategy.name=FedAvg", "hubs.workers=1"],  # the stock minimum of 2 stays capped
        ["strategy.options.min_train_nodes=4", "hubs.count=2", "hubs.workers=[4,6]"],
        ["strategy.name=FedAdam", "strategy.options.eta=1000"],
        ["tau=4", "time_steps=40000000"],
    ],
)
def test_the_limits_themselves_are_accepted(args, capsys):
    assert main(["config", *args]) == 0, capsys.readouterr().err


# ---- a deployed hub's deploy.* keys ------------------------------------------------------------

# "" is not among them: it means "not given" (the experiment's deploy.gossip_timeout holds)
GOSSIP_TIMEOUTS = [-1, 0, -0.5, "abc", " ", "nan", float("inf"), "-inf", True, [1], "1e400"]


@pytest.mark.parametrize("value", GOSSIP_TIMEOUTS)
def test_a_hub_refuses_a_bad_gossip_timeout_before_any_work(value, tmp_path):
    run_config = {
        **to_run_config(default_config()),
        "output_dir": str(tmp_path / "out"),
        "deploy.hub-id": 0,
        "deploy.insecure": True,
        "deploy.gossip-timeout": value,
    }
    with pytest.raises(ConfigError, match=r"^deploy\.gossip-timeout: expected seconds > 0"):
        run_hub(None, run_config)  # type: ignore[arg-type]  # refused before the grid is used
    assert list(tmp_path.iterdir()) == []


# ---- `config --run-config TEXT --app DIR` ----------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]  # the project is a Flower App with every key
APP_KEYS = sorted(to_run_config(default_config()))


def _run_config_strings():
    """Override strings Flower would ignore in part, or that do not hold a valid config."""
    texts = [
        "rounds=",
        "=5",
        "a.b.c",
        "tau = 3",
        "rounds=3 tau",
        "rounds=3 =5",
        "rounds=3 rounds=4",
    ]
    texts += ['rounds="3', "rounds=abc", "rounds=-1", "tau=0", "nope=1", "missing.toml"]
    texts += ["rounds=1e400", 'hubs.workers="0"', 'strategy.name="FedXgbBagging"', "seed=[1]"]
    texts += ['strategy.name="Krum" strategy.options="num_malicious_nodes=10"']
    texts += ['strategy.name="FedAdam" strategy.options="eta=1e300"']
    texts += ['hubs.mixing="/etc/passwd"', 'output_dir="${oc.env:HOME}"', "time_steps=10000000000"]
    for _ in range(12):  # a valid pair and something that is not one
        key = RNG.choice(APP_KEYS)
        junk = RNG.choice(["x", "=1", f"{key}=", "==", "-", "'a b'", "{", f"{key}"])
        pair = RNG.choice(["rounds=3", "tau=2", "q=1", 'weighting="equal"'])
        texts.append(RNG.choice([f"{pair} {junk}", f"{junk} {pair}"]))
    return texts


RUN_CONFIG_STRINGS = _run_config_strings()


@pytest.mark.parametrize("text", RUN_CONFIG_STRINGS)
def test_a_bad_run_config_string_is_refused(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["config", "--run-config", text, "--app", str(ROOT)]
    _assert_refused(capsys, argv, [tmp_path, ROOT / "pyproject.toml"])


def _pyprojects():
    """Text (or bytes) of pyproject.toml files a Flower App folder might hold by mistake."""
    table = "[tool.flwr.app.config]\n"
    texts: list[str | bytes] = [
        "tool = 5\n",
        'tool = "x"\n',
        "tool = [1, 2]\n",
        "[tool]\nflwr = 1\n",
        "[tool]\nflwr = true\n",
        "[tool.flwr]\napp = []\n",
        '[tool.flwr]\napp = "x"\n',
        "[tool.flwr.app]\nconfig = 3\n",
        '[tool.flwr.app]\nconfig = "rounds=3"\n',
        "[tool.flwr.app]\nconfig = [{rounds = 3}]\n",
        table + "rounds = [1, 2]\n",
        table + "rounds = 1979-05-27T07:32:00Z\n",
        table + "rounds = 07:32:00\n",
        table + "hubs = { workers = [1, 2] }\n",
        table + "[[tool.flwr.app.config.x]]\na = 1\n",
        table + "rounds = 'abc'\n",
        table + "rounds = -1\n",
        table + "rounds = inf\n",
        table + "rounds = nan\n",
        table + "tau = 1e300\n",
        table + 'hubs.workers = "x"\n',
        table + '"hubs.workers" = { a = 1 }\n',
        table + 'strategy.name = "FedXgbCyclic"\n',
        table + 'strategy.name = "Krum"\n"strategy.options" = "num_malicious_nodes=10"\n',
        table + '"strategy.options" = 5\n',
        table + "nope = 1\n",
        table + "rounds = 3\nrounds = 4\n",  # not TOML
        table + "rounds = \n",
        "[tool.flwr.app.config\n",
        "\x00\x01\x02",
        b"\xff\xfe[tool]",
        "\ufeff" + table + "rounds = 0\n",
    ]
    texts += [bytes(RNG.randrange(256) for _ in range(RNG.randint(1, 300))) for _ in range(4)]
    return texts


PYPROJECTS = _pyprojects()


def _app_folder(tmp_path, kind, content):
    app = tmp_path / "app"
    app.mkdir()
    path = app / "pyproject.toml"
    if kind == "text":
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    elif kind == "big":
        path.write_text("[tool.flwr.app.config]\n" + "# padding\n" * 200_000)
    elif kind == "dir":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(content)
    return app


APP_CASES = [("text", c) for c in PYPROJECTS] + [
    ("big", None),
    ("dir", None),
    ("none", None),
    ("link", "/dev/null"),
    ("link", "/nonexistent"),
]


@pytest.mark.parametrize(("kind", "content"), APP_CASES)
def test_a_broken_app_pyproject_is_refused(kind, content, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = _app_folder(tmp_path, kind, content)
    _assert_refused(capsys, ["config", "--run-config", "", "--app", str(app)], [tmp_path])


# ---- `compare --out DIR`: only what a comparison wrote is replaced --------------------------

COMPARE = ["compare", "local_sgd", "hl_sgd", "time_steps=8", "simulation.backend=inprocess"]
PLOT_NAMES = [
    f"{m}_vs_{x}.png" for m in ("loss", "accuracy", "consensus") for x in ("time_step", "time_slot")
]
INDEX = '{"title": "t", "runs": {"local_sgd": "local_sgd", "hl_sgd": "hl_sgd"}}'
GOOD_CONFIG = "seed: 0\ntau: 4\n"


def _compare_cases():
    """(what --out holds: {relative path: text, bytes, or None for a folder}, message part)."""
    files: dict[str, str | bytes | None]
    cases: list[tuple[dict[str, str | bytes | None], str]] = [
        ({name: "mine"}, "holds a run") for name in RUN_FILE_NAMES
    ]
    cases += [
        ({name: "mine"}, "no comparison.json") for name in ["comparison.md", "comparison.csv"]
    ]
    cases += [({name: b"\x89PNG mine"}, "no comparison.json") for name in PLOT_NAMES]
    indexes: list[str | bytes] = [
        "{not json",
        "[]",
        '{"runs": 5}',
        '{"runs": {"a": "../x"}}',
        '{"title": 5, "runs": {}}',
        '{"runs": {}, "folders": 5}',
        '{"runs": {}, "folders": ["local_sgd", 3]}',
        b"\xff\xfe\x00",
    ]
    for index in indexes:
        cases.append(({"comparison.json": index}, "is not a comparison's index"))
    cases.append(({"comparison.json": None}, "is a link or a folder"))
    for stray in ["notes.txt", "config.yaml", "history.csv", "summary.json", "sub/x"]:
        files = {"comparison.json": '{"runs": {"other": "other"}}', f"local_sgd/{stray}": "mine"}
        cases.append((files, "no comparison wrote"))
    cases.append(({"local_sgd/notes.txt": "mine"}, "no comparison wrote"))  # no index at all
    damaged: list[tuple[str, str | bytes]] = [
        ("config.yaml", b"\xff\xfe\x00"),
        ("config.yaml", "[1, 2]\n"),
        ("config.yaml", "a: [\n"),
        ("config.yaml", "tau: 4\n"),
        ("config.yaml", ""),
        ("summary.json", "{"),
        ("summary.json", "[]"),
        ("summary.json", b"\x00\x01"),
        ("history.csv", b"\xff\xfe\x00binary"),
        ("history.csv", "time_step,loss\n1,2\n"),
        ("rounds.csv", "round,steps\n1,\x00\n"),
        ("rounds.csv", ""),
    ]
    damaged += [("config.yaml", bytes(RNG.randrange(256) for _ in range(64))) for _ in range(3)]
    for name, content in damaged:
        files = {"comparison.json": INDEX, "hl_sgd/config.yaml": GOOD_CONFIG}
        files[f"hl_sgd/{name}"] = content
        cases.append((files, "damaged earlier run"))
    for name in ["history.csv", "checkpoint.pt", "hub_models.pt"]:  # a run's files, no config
        cases.append(({"comparison.json": INDEX, f"local_sgd/{name}": "x"}, "damaged earlier run"))
    return cases


RUN_FILE_NAMES = list(RUN_FILES)
COMPARE_CASES = _compare_cases()


def _write_tree(root: Path, files) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize(("files", "why"), COMPARE_CASES)
def test_compare_never_replaces_what_no_comparison_wrote(files, why, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    _write_tree(out, files)
    line = _assert_refused(capsys, [*COMPARE, "--out", str(out)], [tmp_path])
    assert line.startswith("flwr-multilevel: error: --out: ") and why in line, line


def test_compare_into_a_real_run_folder_leaves_its_plots_alone(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["simulation.backend=inprocess", "rounds=2", "q=1", "eval.train_examples=100"]
    assert main(["run", *args, f"output_dir={run}"]) == 0
    assert (run / PLOT_NAMES[0]).is_file()
    capsys.readouterr()
    line = _assert_refused(capsys, [*COMPARE, "--out", str(run)], [tmp_path])
    assert "holds a run (config.yaml), not a comparison" in line


def test_compare_may_replace_the_run_folders_comparisons_wrote(tmp_path):
    from flwr_multilevel.cli.compare import check_comparison_dir, load_comparison, run_comparison

    out = tmp_path / "cmp"
    _write_tree(
        out,
        {
            "comparison.json": '{"runs": {"local_sgd": "local_sgd"}, "folders": ["hl_sgd"]}',
            "comparison.md": "old table",
            "local_sgd/config.yaml": GOOD_CONFIG,  # a killed run: no summary yet
            "local_sgd/history.csv": "round,time_step\n0,0\n1,",
            "hl_sgd/config.yaml": GOOD_CONFIG,
            "hl_sgd/summary.json": "{}",
        },
    )
    comparison = load_comparison(["local_sgd", "hl_sgd", "mll_sgd"], ["time_steps=8"])
    assert check_comparison_dir(comparison, out) == out

    def stop(exp, progress=None):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_comparison(comparison, out, launch=stop)
    index = json.loads((out / "comparison.json").read_text())
    assert index["folders"] == ["hl_sgd", "local_sgd", "mll_sgd"]  # earlier ones stay ours
    assert list(index["runs"]) == ["local_sgd", "hl_sgd", "mll_sgd"]


# ---- `run --resume DIR` on folders a crash, an edit or a stranger left ------------------------

RESUME_BASE = [
    "simulation.backend=inprocess",
    "rounds=6",
    "q=2",
    "tau=2",
    "eval.train_examples=200",
]
CONFIG_EDITS = [  # keys that change results, each to another valid value
    ("seed", 7),
    ("tau", 3),
    ("q", 1),
    ("lr", 0.25),
    ("batch_size", 8),
    ("hubs.count", 2),
    ("hubs.workers", 3),
    ("hubs.graph", "ring"),
    ("weighting", "equal"),
    ("data.partition", "unequal"),
    ("model.name", "cnn"),
    ("strategy.name", "FedMedian"),
    ("hub.missing", "renormalize"),
    ("rates.distribution", "fixed"),
    ("eval.train_examples", 100),
    ("rounds", 3),  # below the checkpoint's round
    ("simulation.backend", "batched"),
]


def _csv_edit(name, how):
    """Damage ``name`` (history.csv or rounds.csv) of a run folder ``how``."""

    def damage(folder, rng):
        path = folder / name
        lines = path.read_text().splitlines()
        if how == "binary":
            path.write_bytes(b"\xff\xfe\x00" + bytes(rng.randrange(256) for _ in range(99)))
        elif how == "empty":
            path.write_text("")
        elif how == "header":
            path.write_text("\n".join([lines[0].replace("round", "rnd", 1), *lines[1:]]) + "\n")
        elif how == "first-row":
            path.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
        elif how == "duplicate":
            path.write_text("\n".join([*lines[:3], lines[2], *lines[3:]]) + "\n")
        elif how == "swap":
            path.write_text("\n".join([lines[0], lines[1], lines[3], lines[2], *lines[4:]]) + "\n")
        elif how == "not-a-round":
            cells = lines[2].split(",")
            cells[lines[0].split(",").index("round")] = rng.choice(["x", "-1", "2.5", ""])
            path.write_text("\n".join([*lines[:2], ",".join(cells), *lines[3:]]) + "\n")
        elif how == "cut-middle":
            row = lines[2]
            lines[2] = row[: rng.randint(1, row.rfind(","))]
            path.write_text("\n".join(lines) + "\n")
        elif how == "folder":
            path.unlink()
            path.mkdir()

    return damage


def _checkpoint_edit(how, value=None):
    def damage(folder, rng):
        path = folder / "checkpoint.pt"
        data = path.read_bytes()
        if how == "truncate":
            path.write_bytes(data[: int(len(data) * rng.uniform(0.02, 0.98))])
        elif how == "bytes":
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000))))
        elif how == "empty":
            path.write_bytes(b"")
        elif how == "pickle":
            path.write_bytes(pickle.dumps({"format": "flwr-multilevel-checkpoint", "round": 6}, 2))
        elif how == "folder":
            path.unlink()
            path.mkdir()
        elif how == "link":
            (folder.parent / "elsewhere.pt").write_bytes(data)
            path.unlink()
            path.symlink_to(folder.parent / "elsewhere.pt")
        elif how in ("drop", "set"):
            state = torch.load(path, weights_only=True)
            if how == "drop":
                del state[value]
            else:
                state.update(value)
            torch.save(state, path)

    return damage


def _config_edit(how, key=None, value=None):
    def damage(folder, rng):
        path = folder / "config.yaml"
        text = path.read_text()
        if how == "set":
            cfg = OmegaConf.create(text)
            OmegaConf.update(cfg, key, value)
            path.write_text(OmegaConf.to_yaml(cfg))
        elif how == "truncate":  # cut before `tau: 2` (the default is 4)
            path.write_text(text[: rng.randint(0, text.index("\ntau:"))])
        elif how == "bytes":
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
        elif how == "empty":
            path.write_text("")

    return damage


def _folder_edit(how):
    def damage(folder, rng):
        if how == "only-config":
            for p in folder.iterdir():
                if p.name != "config.yaml":
                    p.unlink()
        elif how == "only-checkpoint":
            for p in folder.iterdir():
                if p.name != "checkpoint.pt":
                    p.unlink()
        elif how == "empty":
            for p in folder.iterdir():
                p.unlink()

    return damage


def _resume_cases():
    cases = [(f"checkpoint-truncated-{i}", _checkpoint_edit("truncate")) for i in range(6)]
    cases += [(f"checkpoint-bytes-{i}", _checkpoint_edit("bytes")) for i in range(3)]
    cases += [
        (f"checkpoint-{how}", _checkpoint_edit(how))
        for how in ("empty", "pickle", "folder", "link")
    ]
    cases += [
        (f"checkpoint-without-{key}", _checkpoint_edit("drop", key)) for key in CHECKPOINT_KEYS
    ]
    cases += [
        ("checkpoint-format", _checkpoint_edit("set", {"format": "other"})),
        ("checkpoint-version", _checkpoint_edit("set", {"version": 2})),
        ("checkpoint-config", _checkpoint_edit("set", {"config": "a: [\n"})),
        ("checkpoint-round-past-rows", _checkpoint_edit("set", {"round": 100})),
        ("checkpoint-round-negative", _checkpoint_edit("set", {"round": -1})),
        ("checkpoint-last-row", _checkpoint_edit("set", {"last_row": {}})),
        ("checkpoint-round-text", _checkpoint_edit("set", {"round": "6"})),
        ("checkpoint-round-0", _checkpoint_edit("set", {"round": 0})),
        ("checkpoint-round-bool", _checkpoint_edit("set", {"round": True})),
    ]
    cases += [(f"config-{key}", _config_edit("set", key, value)) for key, value in CONFIG_EDITS]
    cases += [(f"config-truncated-{i}", _config_edit("truncate")) for i in range(3)]
    cases += [(f"config-bytes-{i}", _config_edit("bytes")) for i in range(2)]
    cases.append(("config-empty", _config_edit("empty")))
    for name in ("history.csv", "rounds.csv"):
        for how in ("binary", "empty", "header", "first-row", "duplicate", "swap", "folder"):
            cases.append((f"{name}-{how}", _csv_edit(name, how)))
    cases += [("history.csv-not-a-round", _csv_edit("history.csv", "not-a-round"))]
    cases += [
        (f"{n}-cut-middle", _csv_edit(n, "cut-middle")) for n in ("history.csv", "rounds.csv")
    ]
    cases += [
        (f"folder-{how}", _folder_edit(how)) for how in ("only-config", "only-checkpoint", "empty")
    ]
    return cases


CHECKPOINT_KEYS = ["format", "version", "config", "round", "mll", "counters", "last_row", "elapsed"]
RESUME_CASES = _resume_cases()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A finished run without its summary: as a kill after its last checkpoint leaves it."""
    folder = tmp_path_factory.mktemp("resume") / "run"
    assert main(["run", *RESUME_BASE, f"output_dir={folder}"]) == 0
    (folder / "summary.json").unlink()
    return folder


@pytest.fixture(scope="module")
def foreign_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("foreign") / "run"
    assert main(["run", *RESUME_BASE, "hubs.count=2", "seed=3", f"output_dir={folder}"]) == 0
    return folder


@pytest.mark.parametrize(("name", "damage"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_a_damaged_run_folder_is_not_resumed(name, damage, killed_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(killed_run, folder)
    damage(folder, random.Random(f"{SEED}{name}"))
    capsys.readouterr()
    _assert_refused(capsys, ["run", "--resume", str(folder)], [tmp_path])


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.yaml"])
def test_a_foreign_run_s_file_is_not_resumed(name, killed_run, foreign_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(killed_run, folder)
    shutil.copy(foreign_run / name, folder / name)
    capsys.readouterr()
    _assert_refused(capsys, ["run", "--resume", str(folder)], [tmp_path])


def _nested(path, value):
    """Set ``state[path[0]]...[path[-1]] = value`` in a checkpoint (None: delete it)."""

    def edit(state):
        node = state
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


# Checkpoints of the right format with edited contents (run/resume_checks.py refuses them)
RUN_CORE_GAPS = [
    ("mll-empty", ["mll"], {}),
    ("mll-text", ["mll"], "x"),
    ("mll-round-text", ["mll", "round"], "x"),
    ("mll-hub-missing", ["mll", "models", 2], None),
    ("mll-model-shape", ["mll", "models", 0, "linear.bias"], ("ndarray", torch.zeros(3))),
    ("mll-model-keys", ["mll", "models", 0], {"x": ("ndarray", torch.zeros(3))}),
    ("mll-strategy-attribute", ["mll", "strategies", 0], ("strategy", {"nope": 1})),
    ("mll-strategy-text", ["mll", "strategies", 0], "x"),
    ("mll-weights-hub-missing", ["mll", "weights", 1], None),
    ("mll-failed-text", ["mll", "failed_in_a_row"], "x"),
    ("counters-time-slot-missing", ["counters", "time_slot"], None),
    ("counters-steps-of-2-workers", ["counters", "steps_taken"], ("ndarray", torch.zeros(2))),
    ("elapsed-text", ["elapsed"], "x"),
]


@pytest.mark.parametrize(
    ("name", "path", "value"), RUN_CORE_GAPS, ids=[g[0] for g in RUN_CORE_GAPS]
)
def test_an_edited_checkpoint_is_refused(name, path, value, killed_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(killed_run, folder)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    _nested(path, value)(state)
    torch.save(state, folder / "checkpoint.pt")
    capsys.readouterr()
    _assert_refused(capsys, ["run", "--resume", str(folder)], [tmp_path])


@pytest.mark.parametrize("names", [["history.csv"], ["checkpoint.pt", "config.yaml"]])
def test_another_runs_files_beside_a_checkpoint_are_refused(
    names, killed_run, foreign_run, tmp_path, capsys
):
    folder = tmp_path / "run"
    shutil.copytree(killed_run, folder)
    for name in names:  # the rest stays this run's
        shutil.copy(foreign_run / name, folder / name)
    capsys.readouterr()
    _assert_refused(capsys, ["run", "--resume", str(folder)], [tmp_path])


def test_the_surfaces_fuzz_is_large_enough():
    new = len(STRATEGY_CASES) + len(GOSSIP_TIMEOUTS) + len(RUN_CONFIG_STRINGS) + len(APP_CASES)
    new += len(COMPARE_CASES) + len(RESUME_CASES) + 2
    assert new >= 150, new
