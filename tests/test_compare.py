"""`compare`, `plot` and `theory` from the command line, and the comparison table's numbers."""

import csv
import json

import pytest

from flwr_multilevel import ConfigError
from flwr_multilevel.cli.compare import (
    COLUMNS,
    default_targets,
    load_comparison,
    run_comparison,
    summarize,
)
from flwr_multilevel.cli.main import main

from .helpers import read_csv

FAST = ["time_steps=16", "simulation.backend=inprocess"]
PLOTS = [
    f"{m}_vs_{x}.png" for m in ("loss", "accuracy", "consensus") for x in ("time_step", "time_slot")
]


def test_compare_two_baselines_writes_table_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "local_sgd", "mll_sgd", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "| local_sgd |" in printed.out and "| mll_sgd |" in printed.out
    assert "[1/2] local_sgd: time step 16/16" in printed.err  # progress on stderr
    for name in ["comparison.md", "comparison.csv", "comparison.json", *PLOTS]:
        assert (out / name).stat().st_size > 0, name
    assert (out / PLOTS[0]).read_bytes()[:4] == b"\x89PNG"
    table = {row["run"]: row for row in read_csv(out / "comparison.csv")}
    assert list(read_csv(out / "comparison.csv")[0]) == list(COLUMNS)
    for label in ("local_sgd", "mll_sgd"):
        history = read_csv(out / label / "history.csv")
        last = history[-1]
        assert table[label]["time_slots"] == last["time_slot"]
        assert float(table[label]["final_accuracy"]) == pytest.approx(float(last["accuracy"]))
        assert float(table[label]["mb_worker_hub"]) == pytest.approx(
            int(last["bytes_worker_hub"]) / 1e6
        )
    # one hub: nothing crosses the hub level; MLL-SGD waits for nobody
    assert float(table["local_sgd"]["mb_hub_hub"]) == 0
    assert float(table["mll_sgd"]["mb_hub_hub"]) > 0
    assert int(table["local_sgd"]["time_slots"]) > 16 == int(table["mll_sgd"]["time_slots"])


def test_comparison_file_merges_common_base_run_and_command_line(tmp_path):
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "comparison: tau sweep\n"
        "common: {hubs: {workers: 2}, lr: 0.3}\n"
        "runs:\n"
        "  Local SGD: {base: local_sgd, hubs: {workers: 6}}\n"
        "  MLL tau=2: {tau: 2, q: 2}\n"
        "targets: {accuracy: 0.5}\n"
    )
    comparison = load_comparison([str(spec)], ["lr=0.2", "time_steps=8"])
    assert comparison.title == "tau sweep" and comparison.target_accuracy == 0.5
    local, mll = comparison.runs
    assert (local.label, local.cfg.hubs.count, local.cfg.hubs.workers) == ("Local SGD", 1, 6)
    assert local.cfg.wait_for_slowest and local.cfg.tau == 8
    assert (mll.cfg.tau, mll.cfg.hubs.workers, mll.cfg.lr, mll.cfg.time_steps) == (2, 2, 0.2, 8)


def test_interrupted_comparison_resumes_without_rerunning(tmp_path):
    out = tmp_path / "cmp"
    comparison = load_comparison(["local_sgd", "hl_sgd"], FAST)
    run_comparison(comparison, out)
    before = (out / "hl_sgd" / "history.csv").read_text()

    def must_not_run(exp, progress=None):
        raise AssertionError(f"{exp.output_dir} ran again")

    run_comparison(load_comparison(["local_sgd", "hl_sgd"], FAST), out, launch=must_not_run)
    assert (out / "hl_sgd" / "history.csv").read_text() == before
    # a changed config is not a finished run: it runs again
    ran = []

    def stop_at_first(exp, progress=None):
        ran.append(exp.output_dir.name)
        raise KeyboardInterrupt

    changed = load_comparison(["local_sgd", "hl_sgd"], [*FAST, "lr=0.2"])
    with pytest.raises(KeyboardInterrupt):
        run_comparison(changed, out, launch=stop_at_first)
    assert ran == ["local_sgd"]


def test_runs_with_different_data_are_refused(tmp_path):
    one, two = tmp_path / "a.yaml", tmp_path / "b.yaml"
    one.write_text("seed: 1\n")
    two.write_text("seed: 2\n")
    with pytest.raises(ConfigError, match="^seed: .*same seed and data"):
        load_comparison([str(one), str(two)])
    two.write_text("data: {partition: dirichlet}\n")
    with pytest.raises(ConfigError, match="^data: "):
        load_comparison([str(one.with_name("a.yaml")), str(two)], ["seed=1"])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["no_such_baseline"], "compare"),
        (["local_sgd", "local_sgd"], "compare"),
        (["local_sgd", "hubs.cnt=3"], "hubs.cnt"),
        (["local_sgd", "time_steps=0"], "time_steps"),
    ],
)
def test_bad_compare_input_is_one_line(args, field, tmp_path, capsys):
    assert main(["compare", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"flwr-multilevel: error: {field}:") and "\n" not in err


def test_plot_redraws_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    run_comparison(load_comparison(["local_sgd", "mll_sgd"], FAST), out)
    for png in PLOTS:
        (out / png).unlink()
    assert main(["plot", str(out)]) == 0
    assert all((out / png).is_file() for png in PLOTS)
    redraw = tmp_path / "redraw"
    assert main(["plot", str(out / "mll_sgd"), str(out / "local_sgd"), "--out", str(redraw)]) == 0
    assert sorted(p.name for p in redraw.glob("*.png")) == sorted(PLOTS)
    assert main(["plot", str(tmp_path)]) == 2
    assert "holds no results" in capsys.readouterr().err


def rows(*values):
    return [
        {
            "time_step": 4 * i,
            "time_slot": 9 * i,
            "steps_taken": 10 * i,
            "accuracy": acc,
            "loss": loss,
            "bytes_worker_hub": 1000 * i,
            "bytes_hub_hub": 10 * i,
        }
        for i, (acc, loss) in enumerate(values)
    ]


def test_summary_columns_by_hand():
    history = rows((0.1, 2.0), (0.6, 1.0), (0.8, 0.5), (0.7, 0.6))
    summary = summarize(history, target_accuracy=0.75, target_loss=1.0)
    assert summary["final_accuracy"] == 0.7 and summary["best_accuracy"] == 0.8
    assert summary["best_loss"] == 0.5 and summary["final_loss"] == 0.6
    assert (summary["steps_to_acc"], summary["slots_to_acc"], summary["grad_steps_to_acc"]) == (
        8,
        18,
        20,
    )
    assert summary["slots_to_loss"] == 9
    assert summary["time_slots"] == 27 and summary["gradient_steps"] == 30
    assert summary["mb_worker_hub"] == pytest.approx(0.003)
    assert summarize(history, 0.9, 0.1)["slots_to_acc"] is None


def test_default_targets_are_reached_by_every_run():
    runs = {"a": rows((0.2, 2.0), (0.9, 0.3)), "b": rows((0.2, 2.0), (0.7, 0.8))}
    accuracy, loss = default_targets(runs)
    assert (accuracy, loss) == (0.693, 0.8081)  # 0.99 * 0.7 floored, 1.01 * 0.8 ceiled
    for history in runs.values():
        assert summarize(history, accuracy, loss)["slots_to_acc"] is not None
        assert summarize(history, accuracy, loss)["slots_to_loss"] is not None


def test_theory_command_prints_the_report(capsys):
    assert main(["theory", "hubs.graph=path", "rates.low=0.5"]) == 0
    text = capsys.readouterr().out
    assert "zeta=" in text and "spectral gap=" in text and "H checks     pass" in text
    assert "p_i <= 2 - sqrt(2)" in text  # uniform rates in [0.5, 1] include slow workers
    assert "constants not given" in text
    args = ["theory", "rates.distribution=fixed", "rates.p=1.0", "theory.L=1"]
    args += ["theory.sigma2=1", "theory.beta=0", "theory.f_gap=2", "lr=0.001"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "largest step size" in text and "meets it: yes" in text and "bound at eta=lr" in text


def test_theory_constants_are_checked(capsys):
    assert main(["theory", "theory.L=-1", "theory.sigma2=1", "theory.beta=0"]) == 2
    assert capsys.readouterr().err.startswith("flwr-multilevel: error: theory.L:")


def test_every_run_writes_its_theory(tmp_path):
    out = tmp_path / "cmp"
    run_comparison(load_comparison(["mll_sgd"], FAST), out)
    theory = json.loads((out / "mll_sgd" / "theory.json").read_text())
    assert theory["num_hubs"] == 3 and theory["tau"] == 4 and 0 < theory["zeta"] < 1


def test_plot_of_a_comparison_keeps_its_title(tmp_path, monkeypatch):
    from flwr_multilevel.run import plots

    out = tmp_path / "cmp"
    run_comparison(load_comparison(["local_sgd"], FAST), out)
    titles = []

    def plot_histories(histories, folder, title):
        titles.append(title)
        return []

    monkeypatch.setattr(plots, "plot_histories", plot_histories)
    assert main(["plot", str(out)]) == 0
    assert main(["plot", str(out), "--title", "mine"]) == 0
    assert titles == ["local_sgd", "mine"]


def test_paper_configs_load_and_match_the_paper():
    from pathlib import Path

    folder = Path(__file__).parent.parent / "baselines" / "paper"
    files = sorted(folder.glob("*.yaml"))
    assert {f.stem for f in files} >= {
        "fig1_emnist", "fig1_cifar10", "fig2_emnist", "fig3_cifar10", "fig4_emnist",
        "fig5_cifar10", "fig6_emnist", "fig6_cifar10", "appendix_mnist",
        "cpu_fig1_mnist", "cpu_fig2_mnist", "cpu_fig4_mnist", "cpu_fig6_mnist",
        "cpu_fig1_fashion", "cpu_fig6_fashion", "cpu_fig2_mnist_dirichlet",
    }  # fmt: skip
    for file in files:
        comparison = load_comparison([str(file)])
        for run in comparison.runs:
            cfg = run.cfg
            workers = cfg.hubs.count * cfg.hubs.workers
            if not file.stem.startswith("cpu_") or "mnist" in file.stem:
                assert workers == 100, (file.stem, run.label)
            if run.label.startswith(("MLL", "HL")) or "hubs x" in run.label:
                assert cfg.q * cfg.tau == 32, (file.stem, run.label)
        if "fig4" in file.stem or "fig5" in file.stem:
            from flwr_multilevel.model.rates import operating_rates

            for run in comparison.runs[1:]:
                options = dict(run.cfg.rates)
                rates = operating_rates(100, options.pop("distribution"), **options)
                assert rates.mean() == pytest.approx(0.55), run.label


def test_runs_may_read_the_same_data_from_different_roots(tmp_path):
    one, two = tmp_path / "a.yaml", tmp_path / "b.yaml"
    one.write_text("data: {root: /somewhere}\n")
    two.write_text("data: {root: /elsewhere}\n")
    assert len(load_comparison([str(one), str(two)]).runs) == 2


def test_compare_over_seeds_adds_mean_rows_and_bands(tmp_path, capsys):
    from flwr_multilevel.cli.main import main as cli_main

    out = tmp_path / "cmp"
    status = cli_main(
        [
            "compare",
            "local_sgd",
            "mll_sgd",
            "simulation.backend=inprocess",
            "time_steps=16",
            "--seeds",
            "0,1",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    table = (out / "comparison.md").read_text()
    assert "mll_sgd [seed 1]" in table or "MLL-SGD" in table
    assert table.count("(mean of 2 seeds)") == 2
    import json

    index = json.loads((out / "comparison.json").read_text())
    assert len(index["runs"]) == 4 and all(len(v) == 2 for v in index["groups"].values())
    assert (out / "loss_vs_time_step.png").stat().st_size > 1000
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    means = [r for r in rows if r["run"].endswith("(mean of 2 seeds)")]
    for mean in means:
        label = mean["run"].removesuffix(" (mean of 2 seeds)")
        seeds = [float(r["final_loss"]) for r in rows if r["run"].startswith(label + " [seed")]
        assert float(mean["final_loss"]) == pytest.approx(sum(seeds) / 2)
    assert main_rejects_bad_seeds(tmp_path)


def main_rejects_bad_seeds(tmp_path):
    from flwr_multilevel.cli.main import main as cli_main

    return cli_main(["compare", "mll_sgd", "--seeds", "1,1", "--out", str(tmp_path / "x")]) == 2
