"""Above WIDE_HUBS hubs, per-hub numbers go to hubs.csv (long format), not to columns."""

import pytest

from flwr_multilevel.engines.launch import launch
from flwr_multilevel.experiment.prepare import prepare
from flwr_multilevel.run import recorder

from .helpers import read_csv

HUBS = 20
COMMON = [
    f"hubs.count={HUBS}",
    "hubs.workers=1",
    "hubs.graph=ring",
    "q=2",
    "eval.hubs=true",
    "eval.train_examples=200",
]


def _run(config, *overrides, resume=False):
    exp = prepare(config(*COMMON, *overrides))
    launch(exp, resume=resume)
    return exp.output_dir


def test_many_hubs_write_hubs_csv_with_the_numbers_of_the_wide_columns(config, monkeypatch):
    out = _run(config, "rounds=4")
    rounds, history = read_csv(out / "rounds.csv"), read_csv(out / "history.csv")
    assert not any(k.startswith("hub") for k in [*rounds[0], *history[0]])
    hubs = read_csv(out / "hubs.csv")
    assert list(hubs[0]) == list(recorder.HUBS_COLUMNS)
    assert [(int(r["round"]), int(r["hub"])) for r in hubs] == [
        (r, d) for r in range(5) for d in range(HUBS)
    ]
    # the same run with per-hub columns: the same numbers
    monkeypatch.setattr(recorder, "WIDE_HUBS", 100)
    wide = _run(config, "rounds=4", "output_dir=" + str(out.parent / "wide"))
    wide_rounds = {int(r["round"]): r for r in read_csv(wide / "rounds.csv")}
    wide_history = {int(r["round"]): r for r in read_csv(wide / "history.csv")}
    for row in hubs:
        r, d = int(row["round"]), int(row["hub"])
        loss = wide_rounds[r][f"hub{d}_train_loss"] if r else ""
        accuracy = wide_history[r][f"hub{d}_accuracy"] if r in wide_history else ""
        assert (row["train_loss"], row["accuracy"]) == (loss, accuracy)


def test_a_resumed_run_keeps_hubs_csv_to_the_checkpoint_and_continues(config):
    whole = _run(config, "rounds=6", "output_dir=" + str(config().output_dir) + "-whole")
    out = _run(config, "rounds=4")
    with (out / "hubs.csv").open("a") as file:  # rows a kill left after the checkpoint
        file.write("5,0,1.5,\n5,1,2.5,\n6,1")
    (out / "config.yaml").write_text(
        (out / "config.yaml").read_text().replace("rounds: 4", "rounds: 6")
    )
    _run(config, "rounds=6", "overwrite=true", resume=True)
    assert read_csv(out / "hubs.csv") == read_csv(whole / "hubs.csv")


@pytest.mark.parametrize("hubs", [recorder.WIDE_HUBS, recorder.WIDE_HUBS + 1])
def test_the_threshold(config, hubs):
    exp = prepare(config(f"hubs.count={hubs}", "hubs.workers=1", "rounds=2", "q=1"))
    launch(exp)
    columns = list(read_csv(exp.output_dir / "rounds.csv")[0])
    assert (f"hub{hubs - 1}_train_loss" in columns) == (hubs <= recorder.WIDE_HUBS)
    assert (exp.output_dir / "hubs.csv").exists() == (hubs > recorder.WIDE_HUBS)
