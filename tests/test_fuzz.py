"""Fuzz: hundreds of malformed configs, files, comparisons and histories, one contract.

Every case must end with exit status 2, exactly one line on stderr starting
``flwr-multilevel: error:``, no exception escaping ``main`` (no traceback), and
nothing written: the output folder is not created and no file changes.
Cases are generated deterministically (``random.Random(SEED)``); most run
in-process through ``cli.main(argv)``, a handful through a real process.
"""

import dataclasses
import os
import random
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from flwr_multilevel.cli.main import main
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment import schema
from flwr_multilevel.experiment.config import checked_run_config, default_config, to_run_config

SEED = 8
RNG = random.Random(SEED)


def _schema_keys(cls=schema.Config, prefix=""):
    """Yield (dotted key, type hint) of every leaf of the schema."""
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _schema_keys(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hint


KEYS = dict(_schema_keys())
CHOICE_KEYS = {
    "weighting",
    "data.name",
    "data.partition",
    "model.name",
    "simulation.backend",
    "simulation.device",
    "rates.distribution",
    "hubs.graph",
    "hubs.mixing",
    "strategy.name",
    "hub.missing",
}
BAD_ANY = ["${foo}", "${oc.env:HOME}", "{a: 1}", "[[1]", "${oc.decode:'1'}"]
BAD_INT = ["abc", "1.5", "[1, 2]", "-1", "18446744073709551616", "true", "1e400", "0x"]
BAD_FLOAT = ["abc", ".nan", ".inf", "-.inf", "nan", "[1.0]", "-1", "1e300", "true"]
BAD_BOOL = ["maybe", "[true]", "abc", "1.5"]
BAD_CHOICE = ["nonsense", "7", "[a]", "''", "FedNope", "../x"]
BAD_PATH_TEXT = ["[a]", "{a: 1}", "x" * 300 + "/y"]
BAD_WORKERS = ["0", "-1", "abc", "1,x", "[1,0]", "1000000", "[1.5]", "[1, 2]", "true"]
VALID_EXTRAS = [
    "tau=8",
    "q=4",
    "lr=0.1",
    "weighting=equal",
    "data.partition=unequal",
    "simulation.backend=inprocess",
    "eval.hubs=false",
    "rates.distribution=fixed",
    "strategy.name=FedAvgM",
]
STRATEGY_CASES = [
    ("FedAvg", "fraction_train", ["0", "2", "-0.5", ".nan", "abc", "true"]),
    ("FedAvg", "fraction_evaluate", ["0", "1.5"]),
    ("FedAvg", "min_train_nodes", ["-1", "1.5", "abc"]),
    ("FedAvg", "weighted_by_key", ["x"]),
    ("FedAvg", "train_metrics_aggr_fn", ["x"]),
    ("FedAvg", "nope", ["1"]),
    ("FedProx", "proximal_mu", ["-1", ".nan", ".inf", "abc"]),
    ("FedAdam", "eta", ["0", "-1", ".nan"]),
    ("FedAdam", "beta_1", ["1", "-0.1"]),
    ("FedYogi", "tau", ["0", ".inf"]),
    ("FedAvgM", "server_momentum", ["1", "2"]),
    ("FedAvgM", "server_learning_rate", ["0", ".nan"]),
    ("FedTrimmedAvg", "beta", ["0.5", "0.9", "-0.1"]),
    ("Krum", "num_malicious_nodes", ["-1", "1.5"]),
    ("MultiKrum", "num_nodes_to_select", ["0"]),
    ("QFedAvg", "q", ["-1"]),
]


def _bad_values(key, hint):
    if key == "hubs.workers":
        return BAD_WORKERS
    if key == "rates.values":
        return ["abc", "[0.5, 2]", "0", "[-1]", "1,x", ".nan"]
    if key == "strategy.options":
        return ["abc", "[1]", "5"]
    if key in CHOICE_KEYS:
        return BAD_CHOICE
    if key in ("data.root", "output_dir"):
        return BAD_PATH_TEXT
    if key == "simulation.ray_address":
        return ["ray://head:10001", "head", "head:0", "head:99999", "a b:1", "[::1"]
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return {int: BAD_INT, float: BAD_FLOAT, bool: BAD_BOOL}[base[0]]


def _override_cases():
    cases = []
    for key, hint in KEYS.items():
        for value in [*_bad_values(key, hint), *RNG.sample(BAD_ANY, 2)]:
            if key.startswith(("time_steps", "max_time_slots", "eval.train_examples")) or (
                key.startswith("theory.")
            ):
                if value in ("''",):
                    continue
            others = [e for e in VALID_EXTRAS if e.split("=")[0] != key]
            extras = RNG.sample(others, RNG.randint(0, 2))
            command = RNG.choice(["config", "config", "run", "theory"])
            cases.append((command, [f"{key}={value}", *extras]))
    for strategy, option, values in STRATEGY_CASES:
        for value in values:
            cases.append(
                (
                    RNG.choice(["config", "run"]),
                    [f"strategy.name={strategy}", f"strategy.options.{option}={value}"]
                    + (
                        ["strategy.options.client_learning_rate=0.1"]
                        if strategy == "QFedAvg"
                        else []
                    ),
                )
            )
    for strategy in ("DifferentialPrivacyServerSideFixedClipping", "QFedAvg", "Strategy", "Result"):
        cases.append(("config", [f"strategy.name={strategy}"]))
    for item in [
        "foo=1",
        "hubs.foo=1",
        "data.name.x=1",
        "eval.every.x=1",
        "Seed=1",
        "strategy.foo=1",
        "hubs.workers=[1,2",
        "lr=[[",
        "seed={",
        "=5",
        "tau",
        "tau=",
        "seed=1=2",
        "a b=1",
        "hubs={count: 0}",
        "rates=5",
        "theory=[1]",
    ]:
        cases.append((RNG.choice(["config", "run"]), [item]))
    cases += [
        ("theory", ["hubs.count=2", "hubs.graph=ring"]),
        ("config", ["hubs.count=2", "hubs.workers=[1,2,3]"]),
        ("config", ["rates.low=0.9", "rates.high=0.5"]),
        ("config", ["rates.distribution=explicit"]),
        ("theory", ["rates.distribution=explicit", "rates.values=0.5,0.5"]),  # one rate is for all
        ("theory", ["hubs.mixing=complete"]),
        ("theory", ["data.partition=shards", "data.shards_per_worker=1000"]),
        ("theory", ["hubs.workers=1000"]),
        ("run", ["--bogus"]),
        ("compare", ["--target-accuracy", "nan", "local_sgd"]),
        ("compare", ["--target-loss", "-1", "local_sgd"]),
    ]
    return cases


OVERRIDE_CASES = _override_cases()


def _assert_refused(capsys, argv, watched):
    """Run ``main(argv)``; assert the one-line contract and that ``watched`` is unchanged."""
    before = {p: _state(p) for p in watched}
    try:
        status = main(argv)
    except BaseException as escaped:  # noqa: BLE001
        pytest.fail(f"{argv}: {type(escaped).__name__} escaped: {escaped}")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("flwr-multilevel: error:"), (argv, err)
    assert "Traceback" not in err
    assert {p: _state(p) for p in watched} == before, argv
    return lines[0]


def _state(path):
    path = Path(path)
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return sorted((p.name, _state(p)) for p in path.iterdir())
    return path.read_bytes()


@pytest.mark.parametrize(("command", "args"), OVERRIDE_CASES)
def test_bad_override(command, args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would appear here
    out = tmp_path / "out"
    argv = [command, *args]
    if command == "run" and not args[0].startswith("output_dir="):
        argv.append(f"output_dir={out}")
    if command == "compare":
        argv += ["--out", str(out)]
    _assert_refused(capsys, argv, [tmp_path])


# ---- graph and matrix files ----------------------------------------------------------------


def _random_bytes(n):
    return bytes(RNG.randrange(256) for _ in range(n))


def _file_cases():
    texts = [
        "",
        "# only a comment\n",
        "   \n\n",
        "a b\n",
        "0 1\nx y\n",
        "root:x:0:0:root:/root:/bin/bash\n",
        "0 1 1\n1 0\n",
        "0 1 0\n0 0 1\n0 1 0\n",  # asymmetric
        "0 -1 0\n-1 0 1\n0 1 0\n",  # negative
        "0 inf 0\ninf 0 1\n0 1 0\n",
        "0 nan 0\nnan 0 1\n0 1 0\n",
        "0 1e400 0\n1e400 0 1\n0 1 0\n",
        "0 0 0\n0 0 0\n0 0 0\n",  # disconnected
        "0 1\n",  # hub 2 alone
        "0 5\n1 2\n",
        "-1 0\n1 2\n",
        "0.5 1\n1 2\n",
        "0 1\n1 2\n2 3 4\n",
        "0 1\n1 0\n",  # 2x2 for 3 hubs
        "0,1,,\n",
        "\x00\x01\x02",
        "0 1 # ok\n1 two\n",
    ]
    cases: list[tuple[str, str | None]] = [("text", t) for t in texts]
    cases += [("bytes", _random_bytes(RNG.randint(1, 400))) for _ in range(8)]
    for _ in range(6):  # random asymmetric adjacency matrices
        m = np.array([[RNG.choice([0, 1, 2]) for _ in range(3)] for _ in range(3)])
        m[0, 1], m[1, 0] = 1, 0
        cases.append(("text", "\n".join(" ".join(map(str, r)) for r in m) + "\n"))
    cases += [("big", None), ("dir", None), ("link", "/etc/passwd"), ("link", "/nonexistent")]
    return cases


MATRIX_TEXTS = [
    "0.5 0.5 0\n0.5 0.5 0\n0 0 1\n",  # not on the path graph's support / stationary
    "0.6 0.3 0.0\n0.3 0.3 0.5\n0.0 0.3 0.5\n",  # column sums
    "1 0 0\n0 1 0\n0 0 1\n",  # no mixing along edges
    "0.5 0.5\n0.5 0.5\n",
    "0.5 0.5 0\n0.5 0 0.5\n",
    "nan 0 0\n0 1 0\n0 0 1\n",
    "-0.5 1.5 0\n1.5 -0.5 0\n0 0 1\n",
    "0.5 0.5 0\n0.5 0.25 0.25\n0 0.25 inf\n",
]


def _write_case(tmp_path, kind, content, name="g.txt"):
    path = tmp_path / name
    if kind == "text":
        path.write_text(content)
    elif kind == "bytes":
        path.write_bytes(content)
    elif kind == "big":
        path.write_text("0 1\n" * 300_000)
    elif kind == "dir":
        path.mkdir()
    else:
        path.symlink_to(content)
    return path


FILE_CASES = _file_cases()


@pytest.mark.parametrize(("kind", "content"), FILE_CASES)
@pytest.mark.parametrize("key", ["hubs.graph", "hubs.mixing"])
def test_bad_graph_or_matrix_file(kind, content, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write_case(tmp_path, kind, content)
    out = tmp_path / "out"
    command = random.Random(f"{key}{content!r}").choice(["run", "theory"])  # order-independent
    argv = [command, f"{key}={path}"] + ([f"output_dir={out}"] if command == "run" else [])
    line = _assert_refused(capsys, argv, [tmp_path])
    assert line.startswith(f"flwr-multilevel: error: {key}: ")
    assert "root:x" not in line  # a file's contents are never echoed


@pytest.mark.parametrize("text", MATRIX_TEXTS + [RNG.choice(MATRIX_TEXTS).replace("0.5", "0.4")])
def test_matrix_failing_the_checks(text, tmp_path, capsys):
    path = _write_case(tmp_path, "text", text, "h.txt")
    line = _assert_refused(capsys, ["theory", f"hubs.mixing={path}"], [path])
    assert line.startswith("flwr-multilevel: error: hubs.mixing: ")


# ---- output folders ------------------------------------------------------------------------


def _output_cases():
    return [
        "file",
        "under_file",
        "long_part",
        "long_path",
        "link",
        "history",
        "summary_only",
        "config_only",
        "linked_history",
        "nul",
    ]


@pytest.mark.parametrize("case", _output_cases())
def test_bad_output_dir(case, tmp_path, capsys):
    target = tmp_path / "out"
    watched = [tmp_path]
    if case == "file":
        target.write_text("mine")
    elif case == "under_file":
        (tmp_path / "f").write_text("mine")
        target = tmp_path / "f" / "out"
    elif case == "long_part":
        target = tmp_path / ("x" * 300)
    elif case == "long_path":
        target = tmp_path.joinpath(*["y" * 200] * 25)
    elif case == "link":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    elif case in ("history", "summary_only", "config_only"):
        target.mkdir()
        name = {"history": "history.csv", "summary_only": "summary.json"}.get(case, "config.yaml")
        (target / name).write_text("mine")
    elif case == "linked_history":
        target.mkdir()
        (tmp_path / "elsewhere.csv").write_text("mine")
        (target / "history.csv").symlink_to(tmp_path / "elsewhere.csv")
    elif case == "nul":
        target = "a\x00b"
    _assert_refused(
        capsys, ["run", "simulation.backend=inprocess", f"output_dir={target}"], watched
    )


# ---- comparison files ----------------------------------------------------------------------

COMPARISONS = [
    "runs: [\n",
    "a: b: c\n",
    "- a\n- b\n",
    "5\n",
    "runs: [a, b]\n",
    "runs: {}\n",
    "runs: {A: 5}\n",
    "runs: {A: [1]}\n",
    "runs: {A: {tau: 0}}\n",
    "runs: {A: {nope: 1}}\n",
    "runs: {A: {strategy: abc}}\n",
    "runs: {A: {base: no_such_baseline}}\n",
    "runs: {A: {base: 7}}\n",
    "runs: {A: {seed: '${oc.env:HOME}'}}\n",
    "runs: {A: {tau: '${q}'}}\n",
    "runs: {A: {}}\nextra: 1\n",
    "runs: {A: {}}\ncommon: 5\n",
    "runs: {A: {}}\ncommon: {nope: 1}\n",
    "runs: {A: {}}\ncommon: {tau: -1}\n",
    "runs: {A: {}}\ntargets: 5\n",
    "runs: {A: {}}\ntargets: {accuracy: .nan}\n",
    "runs: {A: {}}\ntargets: {accuracy: -1}\n",
    "runs: {A: {}}\ntargets: {x: 1}\n",
    "runs: {A: {}}\ncomparison: [a]\n",
    "runs: {'..': {}}\n",
    "runs: {'A B': {}, a_b: {tau: 8}}\n",
    "runs: {A: {seed: 1}, B: {seed: 2}}\n",
    "runs: {A: {data: {name: mnist}}, B: {}}\n",
    "runs: {A: {hubs: {mixing: /etc/passwd}}}\n",
    "runs: {A: {lr: 1e300}}\n",
    "runs: {A: {strategy: {name: FedProx, options: {proximal_mu: -1}}}}\n",
    "runs: {A: {output_dir: [1, 2]}}\n",
    "runs: !!python/object:os.system {}\n",
    "runs: &a [*a]\n",
]


@pytest.mark.parametrize("text", [*COMPARISONS, b"\xff\xfe\x00garbage", b"runs:\x00\n"])
def test_bad_comparison_file(text, tmp_path, capsys):
    spec = tmp_path / "cmp.yaml"
    if isinstance(text, bytes):
        spec.write_bytes(text)
    else:
        spec.write_text(text)
    out = tmp_path / "cmp"
    line = _assert_refused(capsys, ["compare", str(spec), "--out", str(out)], [out, spec])
    assert "root:x" not in line


def test_comparison_out_is_a_file(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.write_text("mine")
    _assert_refused(capsys, ["compare", "local_sgd", "mll_sgd", "--out", str(out)], [tmp_path])


# ---- histories for `plot` ------------------------------------------------------------------

HEADER = "round,time_step,time_slot,loss,test_loss,accuracy,consensus"


def _history(rows=5):
    lines = [HEADER]
    for r in range(rows):
        lines.append(f"{r},{4 * r},{5 * r},{1 / (r + 1):.6f},0.5,{0.1 * r:.3f},0.01")
    return "\n".join(lines) + "\n"


def _history_cases():
    good = _history()
    last = good.rstrip("\n").rsplit("\n", 1)[1]
    cases = []
    for _ in range(12):  # half-written: the last line cut before its last field
        cut = RNG.randint(1, last.rfind(","))
        cases.append(("history", good.rstrip("\n")[: len(good.rstrip("\n")) - len(last) + cut]))
    for _ in range(12):  # a cell that is not a number
        lines = good.splitlines()
        row = RNG.randint(1, len(lines) - 1)
        cells = lines[row].split(",")
        cells[RNG.randrange(len(cells))] = RNG.choice(["abc", "", "1..2", "0x1g", "--"])
        lines[row] = ",".join(cells)
        cases.append(("history", "\n".join(lines) + "\n"))
    cases += [
        ("history", ""),
        ("history", HEADER + "\n"),
        ("history", "round,loss\n1,0.5\n"),
        ("history", "\x00\x01binary"),
        ("history_bytes", _random_bytes(200)),
        ("history", good.replace("time_step", "ts")),
        ("history", good + "1,2,3,4,5,6,7,8,9\n"),
        ("history_dir", None),
        ("empty_folder", None),
        ("index", "{not json"),
        ("index", '{"runs": ["a"]}'),
        ("index", '{"title": 5, "runs": {}}'),
        ("index", '{"runs": {"a": "../x"}}'),
        ("index", '{"runs": {"a": 5}}'),
        ("index", "[]"),
        ("index_bytes", b"\xff\xfe"),
    ]
    return cases


@pytest.mark.parametrize(("kind", "content"), _history_cases())
def test_bad_history_for_plot(kind, content, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    if kind == "history":
        (folder / "history.csv").write_text(content)
    elif kind == "history_bytes":
        (folder / "history.csv").write_bytes(content)
    elif kind == "history_dir":
        (folder / "history.csv").mkdir()
    elif kind == "index":
        (folder / "comparison.json").write_text(content)
        (folder / "a").mkdir()
        (folder / "a" / "history.csv").write_text(_history())
    elif kind == "index_bytes":
        (folder / "comparison.json").write_bytes(content)
    out = tmp_path / "png"
    _assert_refused(capsys, ["plot", str(folder), "--out", str(out)], [out, folder])


def test_plot_on_a_good_history_still_works(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.csv").write_text(_history())
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 6  # loss, accuracy, consensus x 2


# ---- `flwr run .`: the run config ----------------------------------------------------------


def _run_config_cases():
    base = to_run_config(default_config())
    cases = []
    toml_bad = ["${foo}", "${oc.env:HOME}", "abc", -1, 1e300, "[1,2"]
    for key in base:
        for value in RNG.sample(toml_bad, 3):
            if key in ("output_dir", "data.root") and value in ("abc", -1, 1e300, "[1,2"):
                continue  # a legal folder name
            if key in ("hubs.workers",) and value == "abc":
                value = "2,x"
            cases.append((key, value))
    cases += [("hubs.mixing", "/etc/passwd"), ("hubs.graph", "/etc/hosts"), ("nope", 1)]
    cases += [("strategy.options", v) for v in ("mu", "proximal_mu=1", "fraction_train=2,x=1")]
    return cases


@pytest.mark.parametrize(("key", "value"), _run_config_cases())
def test_bad_run_config(key, value):
    run_config = {**to_run_config(default_config()), key: value}
    try:
        checked_run_config(run_config)
    except ConfigError as err:
        text = str(err)
        assert "\n" not in text and "root:x" not in text
        assert os.environ.get("HOME", "/root") not in text.split("got")[-1]
    else:
        pytest.fail(f"{key}={value!r} was accepted")


# ---- a handful through a real process ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["config", "seed=${oc.env:HOME}"],
        ["run", "hubs.workers=[1,2"],
        ["theory", "theory.L=1e308", "theory.sigma2=1", "theory.beta=0", "theory.f_gap=1"],
        ["run", "strategy.options.fraction_train=2"],
        ["theory", "GRAPH"],
        ["plot", "HISTORY"],
    ],
)
def test_real_process(args, tmp_path):
    graph = tmp_path / "g.bin"
    graph.write_bytes(_random_bytes(64))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.csv").write_text(HEADER + "\n1,2,abc\n")
    args = [
        a.replace("GRAPH", f"hubs.graph={graph}").replace("HISTORY", str(tmp_path / "run"))
        for a in args
    ]
    out = tmp_path / "out"
    if args[0] == "run":
        args.append(f"output_dir={out}")
    if args[0] == "plot":
        args += ["--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "flwr_multilevel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flwr-multilevel: error:"), proc.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_fuzz_is_large_enough():
    total = (
        len(OVERRIDE_CASES)
        + 2 * len(FILE_CASES)
        + len(MATRIX_TEXTS)
        + len(_output_cases())
        + len(COMPARISONS)
        + len(_history_cases())
        + len(_run_config_cases())
    )
    assert total >= 300, total
