"""Every backend runs a setting or refuses it; the batched backend runs ``hub.*`` as the engine.

Issue 15: ``simulation.backend=batched hub.clip_norm=0.01`` ran unclipped. Each
``hub.*`` key now gives the message engine's result on the batched path, for
the same seed: on the default digits config (every reply valid) and on a run
that diverges (lr=1000: some workers' models hold NaN or Inf, so their
replies are invalid and ``missing``, ``min_replies`` and ``max_failed_rounds``
decide). Everything a backend does not run exits 2 naming the key.
"""

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from flwr_multilevel.cli.main import main
from flwr_multilevel.engines.batched import simulate
from flwr_multilevel.engines.batched_hubs import (
    HubRules,
    average_matrix,
    checked_rules,
    gossip_matrix,
    mix,
)
from flwr_multilevel.engines.support import EVERY_BACKEND, RULES, check_supported
from flwr_multilevel.errors import ConfigError, RunAborted
from flwr_multilevel.experiment.config import default_config, load_config
from flwr_multilevel.experiment.prepare import initial_model, prepare

from .conftest import make_config
from .helpers import flat, read_csv, run_engine
from .test_batched import direct_runner

SMALL = ["rounds=4", "hubs.workers=2"]
# lr=1000 on the CNN diverges: from round 1 some workers' models hold NaN or Inf
# (1 of 12 in rounds 1 and 2, all in round 3); slow rates keep others at 0 steps
DIVERGING = ["rounds=3", "hubs.workers=4", "model.name=cnn", "lr=1000", "rates.low=0.2"]
TOLERANCE = 1e-5


def both_backends(tmp_path, overrides):
    """Run the message engine and the batched path; return their hub models and rounds."""
    engine_rounds, batched_rounds = [], []

    def engine_round(report, _models):
        engine_rounds.append((sum(report.steps.values()), report.missing, sorted(report.dropped)))

    def batched_round(_round, _models, result):
        dropped = sorted(f"worker {w}: {reason}" for w, reason in result.dropped.items())
        batched_rounds.append((int(result.steps.sum()), sorted(result.dropped), dropped))

    _, engine = run_engine(make_config(tmp_path / "engine", overrides), on_round=engine_round)
    batched = simulate(prepare(make_config(tmp_path / "batched", overrides)), batched_round)
    return (
        [flat(m) for m in engine],
        [flat([a.numpy() for a in m.values()]) for m in batched],
        engine_rounds,
        batched_rounds,
    )


@pytest.mark.parametrize(
    "setting",
    [
        "hub.clip_norm=0.01",  # the case: every update clipped
        "hub.clip_norm=0.3",  # some updates clipped, some within the norm
        "hub.missing=renormalize",
        "hub.min_replies=1.0",
        "hub.max_failed_rounds=1",
    ],
)
def test_hub_keys_give_the_engines_models(tmp_path, setting):
    engine, batched, engine_rounds, batched_rounds = both_backends(tmp_path, [*SMALL, setting])
    for hub, (a, b) in enumerate(zip(batched, engine, strict=True)):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE, err_msg=f"hub {hub}")
    assert batched_rounds == engine_rounds


def test_clipping_is_applied(tmp_path):
    """Each hub stays within rounds * clip_norm of x_1 (L2); unclipped it moves far more."""

    def distance_from_start(overrides):
        exp = prepare(make_config(tmp_path / str(len(overrides)), overrides))
        start = flat([a.numpy() for a in initial_model(exp).values()])
        models = simulate(exp)
        return max(np.linalg.norm(flat([a.numpy() for a in m.values()]) - start) for m in models)

    assert distance_from_start([*SMALL, "hub.clip_norm=0.01"]) <= 4 * 0.01 + 1e-6
    assert distance_from_start(SMALL) > 1.0


def final_accuracy(folder):
    with open(folder / "history.csv", newline="", encoding="utf-8") as file:
        return float(list(csv.DictReader(file))[-1]["accuracy"])


def test_clip_norm_on_the_command_line_equals_inprocess(tmp_path):
    """Issue 15 as reported: the batched run's final accuracy is the message engine's."""
    common = ["run", *SMALL, "hub.clip_norm=0.01"]
    for backend in ("inprocess", "batched"):
        out = tmp_path / backend
        assert main([*common, f"simulation.backend={backend}", f"output_dir={out}"]) == 0
    clipped = final_accuracy(tmp_path / "batched")
    assert clipped == pytest.approx(final_accuracy(tmp_path / "inprocess"), abs=1e-4)
    free = tmp_path / "free"
    assert main(["run", *SMALL, "simulation.backend=batched", f"output_dir={free}"]) == 0
    assert final_accuracy(free) > clipped + 0.3  # unclipped it learns; clipped to 0.01 it cannot


def assert_close_to_scale(got, expected):
    """Diverged models reach 1e21: compare them relative to each hub's largest value."""
    for hub, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert np.isfinite(a).all() and np.isfinite(b).all()
        scale = float(np.abs(b).max())
        assert float(np.abs(a - b).max()) <= TOLERANCE * scale, f"hub {hub}"


@pytest.mark.parametrize(
    "setting", ["hub.missing=stay", "hub.missing=renormalize", "hub.min_replies=0.9"]
)
def test_invalid_replies_are_treated_as_the_engine_does(tmp_path, setting):
    engine, batched, engine_rounds, batched_rounds = both_backends(
        tmp_path, [*DIVERGING, "hub.max_failed_rounds=0", setting]
    )
    assert any(missing for _, missing, _ in engine_rounds)  # the case tests what it should
    assert batched_rounds == engine_rounds  # the same steps, missing workers and reasons
    assert_close_to_scale(batched, engine)


def test_missing_and_min_replies_change_a_diverging_run(tmp_path):
    """The three settings above give three different runs (so each was exercised)."""
    runs = {
        setting: simulate(
            prepare(
                make_config(tmp_path / setting, [*DIVERGING, "hub.max_failed_rounds=0", setting])
            )
        )
        for setting in ("hub.missing=stay", "hub.missing=renormalize", "hub.min_replies=0.9")
    }
    finals = {k: flat([a.numpy() for a in v[0].values()]) for k, v in runs.items()}
    values = list(finals.values())
    assert not np.allclose(values[0], values[1]) and not np.allclose(values[0], values[2])


def test_max_failed_rounds_aborts_at_the_engines_round(tmp_path):
    overrides = [*DIVERGING, "hub.max_failed_rounds=1"]
    with pytest.raises(RunAborted) as engine:
        run_engine(make_config(tmp_path / "engine", overrides))
    with pytest.raises(RunAborted) as batched:
        simulate(prepare(make_config(tmp_path / "batched", overrides)))
    prefix = "hub 0 kept its model for 1 rounds in a row (round 3); last reason: 0 of 4"
    assert str(engine.value).startswith(prefix) and str(batched.value).startswith(prefix)


def test_max_failed_rounds_exits_1_on_the_command_line(tmp_path, capsys):
    args = ["run", *DIVERGING, "hub.max_failed_rounds=1", "simulation.backend=batched"]
    assert main([*args, f"output_dir={tmp_path / 'x'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("flwr-multilevel: error: hub 0 kept its model for 1 rounds")
    rows = read_csv(tmp_path / "x" / "rounds.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3]  # the round that ended the run is kept


# ---- the support table ---------------------------------------------------------------------


def leaf_keys(node, prefix=""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if OmegaConf.is_dict(value) and key != "options":
            yield from leaf_keys(value, f"{name}.")
        else:
            yield name


def test_every_config_key_is_in_the_table():
    """A new key fails here until the table says which backends implement it."""
    ruled = {rule.key for rule in RULES}
    for key in leaf_keys(default_config()):
        covered = key in ruled or any(key == k or key.startswith(f"{k}.") for k in EVERY_BACKEND)
        assert covered, f"{key}: add it to engines/support.py (RULES or EVERY_BACKEND)"


@pytest.mark.parametrize(
    ("backend", "setting", "key"),
    [
        ("batched", "strategy.name=FedAdam", "strategy.name"),
        ("batched", "strategy.options={fraction_train: 0.5}", "strategy.options.fraction_train"),
        ("batched", "model.name=resnet18", "model.name"),
        ("batched", "simulation.timeout=60", "simulation.timeout"),
        ("batched", "simulation.gpus_per_worker=0.5", "simulation.gpus_per_worker"),
        ("batched", "simulation.ray_groups=false", "simulation.ray_groups"),
        ("inprocess", "simulation.gpus_per_worker=0.5", "simulation.gpus_per_worker"),
        ("inprocess", "simulation.ray_groups=false", "simulation.ray_groups"),
    ],
)
def test_what_a_backend_does_not_run_exits_2_naming_the_key(
    tmp_path, capsys, backend, setting, key
):
    out = tmp_path / "run"
    assert main(["run", f"simulation.backend={backend}", setting, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"flwr-multilevel: error: {key}: ")
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(
    "setting",
    [
        "hub.clip_norm=0.01",
        "hub.missing=renormalize",
        "hub.min_replies=0.5",
        "hub.max_failed_rounds=0",
        "simulation.device=auto",
    ],
)
def test_every_backend_takes_the_hub_keys(setting):
    cfg = load_config(None, [setting])
    for backend in ("ray", "inprocess", "batched"):
        check_supported(cfg, backend)


def test_ray_takes_everything():
    settings = [
        "strategy.name=FedAdam",
        "model.name=resnet18",
        "simulation.timeout=60",
        "simulation.gpus_per_worker=0.5",
        "simulation.ray_groups=false",
    ]
    check_supported(load_config(None, settings), "ray")


def test_hub_rules_out_of_range_name_their_key():
    for rules, key in (
        (HubRules(clip_norm=0.0), "hub.clip_norm"),
        (HubRules(min_replies=1.5), "hub.min_replies"),
        (HubRules(max_failed_rounds=-1), "hub.max_failed_rounds"),
    ):
        with pytest.raises(ConfigError) as err:
            checked_rules(rules)
        assert err.value.key == key


def test_gossip_matrix_keeps_columns_stochastic():
    mixing = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25], [0.0, 0.25, 0.75]])
    for failed in ([], [0], [1], [0, 2], [0, 1, 2]):
        matrix = gossip_matrix(mixing, failed)
        np.testing.assert_allclose(matrix.sum(axis=0), 1.0)
        for d in failed:
            assert matrix[d, d] == 1.0 and matrix[:, d].sum() == 1.0
    np.testing.assert_array_equal(gossip_matrix(mixing, []), mixing)


def test_a_dense_average_that_spreads_nan_to_every_hub_is_redone(tmp_path):
    """On a GPU one dense product averages all hubs, so one NaN worker makes every z_d NaN.

    The hubs whose workers are all finite get their own average back; the
    NaN worker's hub averages with ``y_d`` in its place (``stay``).
    """
    exp = prepare(make_config(tmp_path, ["hubs.workers=2"]))
    runner = direct_runner(exp)
    gen = torch.Generator().manual_seed(0)
    hubs = {
        "linear.weight": torch.randn(3, 10, 64, generator=gen),
        "linear.bias": torch.randn(3, 10, generator=gen),
    }
    workers = {
        key: value.index_select(0, runner.hub_of) + 0.1 * torch.randn(6, *value.shape[1:])
        for key, value in hubs.items()
    }
    clean, failed, dropped = runner._hub_averages({k: v.clone() for k, v in workers.items()}, hubs)
    assert failed == {} and dropped == {}
    workers["linear.weight"][0, 0, 0] = float("nan")

    def dense(stacked, v=None):  # what _average does on a GPU
        weights = runner.v if v is None else v
        return mix(average_matrix(weights, runner.hub_of, runner.num_hubs), stacked)

    runner._average = dense
    second = {k: v[1].clone() for k, v in workers.items()}
    got, failed, dropped = runner._hub_averages(workers, hubs)
    assert failed == {} and dropped == {0: "array 'linear.weight' holds NaN or Inf"}
    v = exp.hierarchy.v
    for key, value in got.items():
        torch.testing.assert_close(value[1:], clean[key][1:], rtol=0, atol=1e-6)
        stay = (v[0] * hubs[key][0].double() + v[1] * second[key].double()).float()
        torch.testing.assert_close(value[0], stay, rtol=0, atol=1e-6)


def test_an_aborted_batched_run_records_its_last_round_and_failed_hubs(tmp_path, capsys):
    out = tmp_path / "diverged"
    args = ["run", "simulation.backend=batched", "model.name=cnn", "lr=1000", "hubs.workers=4"]
    args += ["rates.low=0.2", "rounds=6", "hub.max_failed_rounds=1", "eval.train_examples=100"]
    assert main([*args, f"output_dir={out}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("flwr-multilevel: error: hub ") and "kept its model" in err[-1]
    with (out / "rounds.csv").open() as file:
        rows = list(csv.DictReader(file))
    aborted = err[-1].split("(round ")[1].split(")")[0]
    assert rows[-1]["round"] == aborted  # the round that stopped the run is recorded
    assert rows[-1]["failed_hubs"] != "" and all(r["failed_hubs"] == "" for r in rows[:-1])
    assert any(r["missing"] != "0" for r in rows)  # workers whose models hold NaN or Inf
    engine = tmp_path / "engine"
    args[1] = "simulation.backend=inprocess"
    assert main([*args, f"output_dir={engine}"]) == 1
    with (engine / "rounds.csv").open() as file:
        engine_rows = list(csv.DictReader(file))
    columns = ("round", "steps", "dropped", "missing", "failed_hubs", "dropped_reasons")
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in engine_rows]
