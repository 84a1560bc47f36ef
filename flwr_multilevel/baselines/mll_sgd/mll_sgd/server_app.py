"""The ServerApp: every hub of MLL-SGD in one ServerApp; the global model u scored centrally.

The run is recorded by flwr-multilevel's run core (``RunRecorder``), so its
results folder has the files and columns of ``flwr-multilevel run``:
``history.csv`` (u after every ``eval.every`` time steps), ``rounds.csv``,
``hub_models.pt``, ``summary.json`` and the plots; plus ``run_config.json``,
``results.json`` (the ``Result``'s per-round metrics) and ``final_model.pt``.
"""

from collections.abc import Sequence
from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from flwr_multilevel.model.mixing import consensus_distance, spectrum, weighted_average
from flwr_multilevel.protocol.arrays import stack, unstack
from flwr_multilevel.protocol.keys import BATCH_SIZE, LR
from flwr_multilevel.run.recorder import RunPlan, RunRecorder
from flwr_multilevel.run.results import ResultsFolder

from .dataset import load_centralized, split_of
from .model import device_of, get_model, initial_arrays, test
from .strategy import mll_sgd_strategy
from .utils import num_rounds, optional_count, output_dir, write_result

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run MLL-SGD as ``[tool.flwr.app.config]`` (or ``--run-config``) describes."""
    cfg = context.run_config
    split, seed, tau = split_of(cfg), int(cfg["seed"]), int(cfg["tau"])
    device = device_of(str(cfg.get("simulation.device", "cpu")))
    strategy = mll_sgd_strategy(cfg)
    plan = RunPlan(
        tau=tau,
        num_rounds=num_rounds(cfg),
        eval_every=int(cfg.get("eval.every", 0)) or strategy.q * tau,  # in time steps
        num_workers=strategy.num_workers,
        num_hubs=strategy.num_hubs,
        max_time_slots=optional_count(cfg, "max_time_slots"),
    )
    folder = ResultsFolder(output_dir(cfg), overwrite=True)
    folder.write_json("run_config.json", dict(cfg))
    log(INFO, "MLL-SGD baseline: %s rounds, results in %s", plan.num_rounds, folder.path)

    # The server's copy of the model and data to score u on
    model = get_model(str(cfg["model.name"]), split).to(device)
    (x_train, y_train), (x_test, y_test) = load_centralized(
        split, optional_count(cfg, "eval.train_examples") or 0, seed
    )

    def evaluate(models: Sequence[ArrayRecord]) -> dict[str, float]:
        """Score u = sum_d b_d y_d on the train sample and the test set."""
        b = strategy.hierarchy.b
        stacked, layout = stack(list(models))
        u = unstack(weighted_average(b, stacked)[None, :], layout)[0]
        model.load_state_dict(u.to_torch_state_dict())
        loss, _ = test(model, x_train, y_train, device)
        test_loss, accuracy = test(model, x_test, y_test, device)
        consensus = consensus_distance(b, stacked)
        return {"loss": loss, "test_loss": test_loss, "accuracy": accuracy, "consensus": consensus}

    initial = initial_arrays(str(cfg["model.name"]), split, seed)
    recorder = RunRecorder(folder, plan, evaluate)
    recorder.begin([initial] * plan.num_hubs, None)
    strategy.on_round = recorder.on_round
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=plan.num_rounds,
        timeout=float(cfg.get("simulation.timeout", 600.0)),
        train_config=ConfigRecord({LR: float(cfg["lr"]), BATCH_SIZE: int(cfg["batch_size"])}),
    )
    summary = recorder.finish(
        zeta=spectrum(strategy.mixing).zeta if strategy.mixing is not None else None
    )
    write_result(folder.path, result, summary)
    torch.save(result.arrays.to_torch_state_dict(), folder.path / "final_model.pt")
    log(INFO, "MLL-SGD baseline done: accuracy %.4f", summary["accuracy"])
