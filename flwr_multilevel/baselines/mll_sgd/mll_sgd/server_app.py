"""The ServerApp: every hub of MLL-SGD in one ServerApp; the global model u scored centrally."""

import time
from logging import INFO
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from .dataset import load_centralized, split_of
from .model import device_of, get_model, initial_arrays, test
from .strategy import SlotBudget, mll_sgd_strategy
from .utils import ResultsWriter, num_rounds, output_dir

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run MLL-SGD as ``[tool.flwr.app.config]`` (or ``--run-config``) describes.

    Writes ``history.csv`` (one row per evaluation of u), ``results.json``
    (the ``Result``'s per-round metrics) and ``final_model.pt`` to ``output-dir``.
    """
    cfg = context.run_config
    split, seed, tau = split_of(cfg), int(cfg["seed"]), int(cfg["tau"])
    device = device_of(str(cfg.get("device", "cpu")))
    budget = SlotBudget(int(cfg.get("max-time-slots", 0)))
    strategy = mll_sgd_strategy(cfg, budget)
    rounds = num_rounds(cfg)
    eval_every = int(cfg.get("eval-every", 0)) or strategy.q * tau  # in time steps
    writer = ResultsWriter(output_dir(cfg), cfg)
    log(INFO, "MLL-SGD baseline: %s rounds, results in %s", rounds, writer.folder)

    # The server's copy of the model and data to score u on
    model = get_model(str(cfg["model"]), split).to(device)
    (x_train, y_train), (x_test, y_test) = load_centralized(
        split, int(cfg.get("eval-train-examples", 0)), seed
    )
    start = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Score u after every ``eval-every`` time steps, the last round and round 0."""
        slots = budget.slots + (strategy.report.slots if server_round else 0)
        crossed = server_round * tau // eval_every > (server_round - 1) * tau // eval_every
        if server_round and not (crossed or server_round == rounds or budget.spent(slots)):
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, _ = test(model, x_train, y_train, device)
        test_loss, accuracy = test(model, x_test, y_test, device)
        row: dict[str, int | float | list[int] | list[float]] = {
            "loss": loss,
            "test-loss": test_loss,
            "accuracy": accuracy,
        }
        writer.append(
            {
                "round": server_round,
                "time-step": server_round * tau,
                "time-slot": slots,
                **row,
                "elapsed-s": round(time.perf_counter() - start, 3),
            }
        )
        log(INFO, "u after round %s: accuracy %.4f, loss %.4f", server_round, accuracy, loss)
        return MetricRecord(row)

    result = strategy.start(
        grid=grid,
        initial_arrays=initial_arrays(str(cfg["model"]), split, seed),
        num_rounds=rounds,
        timeout=float(cfg.get("timeout", 600)),
        train_config=ConfigRecord({"lr": float(cfg["lr"]), "batch-size": int(cfg["batch-size"])}),
        evaluate_fn=evaluate,
    )
    summary: dict[str, Any] = {
        "rounds": max(result.train_metrics_clientapp, default=0),
        "time-slots": budget.slots,
        "wall-s": round(time.perf_counter() - start, 3),
        **dict(result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]),
    }
    writer.write_result(result, summary)
    torch.save(result.arrays.to_torch_state_dict(), writer.folder / "final_model.pt")
    log(INFO, "MLL-SGD baseline done: %s", summary)
