"""The in-process message engine against a plain PyTorch loop, side by side in one process.

For each config, both paths run the same rounds from the same initial model:

* ``engine``: :class:`MLLSGD` with the worker ClientApp on the in-process
  :class:`LocalGrid` (``run_round`` + ``round_metrics``, what ``start`` does
  every round without evaluation);
* ``loop``: the bench's own plain loop: one model per worker, the same draws
  (``step_schedule``), the same local data, one SGD step per coin, the hub
  averages (``v_i``) and the gossip (``H``) as tensor sums; no Flower.

Repetitions are interleaved (engine, loop, engine, loop, ...), torch runs on
``--threads`` threads, and the fastest repetition of each path counts, both in
wall time and in this process's CPU time (``time.process_time``: on a machine
that other work loads, the CPU-time ratio is the steadier one). Both
paths take exactly the same gradient steps, so the ratio of their times per
worker-gradient-step is the ratio of their round times. The data are
MNIST-shaped and synthetic (60,000 x 1x28x28, seeded, served under the name
``mnist``), or the embedded ``digits`` with ``--data digits``. Prints a
markdown table; the last column is how far the two results are apart.

    PYTHONPATH=. python bench/engine_vs_loop.py [--reps 3] [--threads 1] [--only NAME]
"""

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from torch.nn import functional as F

import flwr_multilevel.client_app as client_app_module
import flwr_multilevel.experiment.local_data as local_data_module
import flwr_multilevel.experiment.prepare as experiment_module
from flwr_multilevel.clients.worker import step_schedule
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.config import load_config, validate
from flwr_multilevel.experiment.data import Dataset
from flwr_multilevel.experiment.models import build_model
from flwr_multilevel.experiment.prepare import Experiment, build_mllsgd, initial_model, prepare
from flwr_multilevel.experiment.prepare import train_config as make_train_config

NETWORK_50 = ["hubs.count=5", "hubs.workers=10", "tau=8", "q=4", "rates.distribution=fixed"]
CONFIGS: dict[str, list[str]] = {
    "cnn 5x10 b32": [*NETWORK_50, "model.name=cnn", "batch_size=32", "rounds=2"],
    "cnn 5x10 b300": [*NETWORK_50, "model.name=cnn", "batch_size=300", "rounds=1"],
    "logreg 5x10 b32": [*NETWORK_50, "model.name=logreg", "batch_size=32", "rounds=4"],
    "logreg 5x10 b300": [*NETWORK_50, "model.name=logreg", "batch_size=300", "rounds=4"],
    "logreg 20x50 ring b32": [
        "hubs.count=20",
        "hubs.workers=50",
        "hubs.graph=ring",
        "tau=8",
        "q=2",  # 2 rounds with one gossip (q=4 would need 4 rounds of 1,000 workers)
        "rates.distribution=fixed",
        "model.name=logreg",
        "batch_size=32",
        "rounds=2",
    ],
}
COMMON = ["lr=0.05", "simulation.backend=inprocess", "overwrite=true", "eval.hubs=false"]


def synthetic_mnist(examples: int = 60_000, classes: int = 10, seed: int = 0) -> Dataset:
    """Return MNIST-shaped synthetic data: a seeded prototype per class plus noise."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(classes, 1, 28, 28, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=gen)
        noise = torch.rand(n, 1, 28, 28, generator=gen)
        return (0.6 * prototypes[labels] + 0.4 * noise).clamp_(0, 1), labels

    (x_train, y_train), (x_test, y_test) = split(examples), split(examples // 6)
    return Dataset(x_train, y_train, x_test, y_test, classes)


def serve_synthetic(data: Dataset) -> None:
    """Make the experiment and the worker ClientApp load ``data`` as ``mnist`` (no download)."""
    original = experiment_module.load_dataset

    def load(name: str, root: str = "data") -> Dataset:
        return data if name == "mnist" else original(name, root)

    experiment_module.load_dataset = load  # type: ignore[assignment]
    local_data_module.load_dataset = load  # type: ignore[assignment]


def flat(models: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Return every hub model as one flat float64 vector."""
    return [np.concatenate([np.asarray(t, np.float64).ravel() for t in m.values()]) for m in models]


def engine_path(exp: Experiment) -> Callable[[], list[np.ndarray]]:
    """Set up the message engine in-process (not timed); return the call that runs the rounds."""
    rounds = int(exp.cfg.rounds)
    engine = build_mllsgd(exp)
    grid = LocalGrid(client_app_module.app, exp.hierarchy.num_workers)
    init = initial_model(exp)
    engine.setup(grid, init)
    config = engine.check_train_config(ConfigRecord(dict(make_train_config(exp))))  # type: ignore[arg-type]

    def go() -> list[np.ndarray]:
        engine.models = {d: init for d in engine.hub_ids}
        for server_round in range(1, rounds + 1):
            engine.run_round(grid, server_round, config, 600.0)
            engine.round_metrics()
        return flat([{k: a.numpy() for k, a in engine.models[d].items()} for d in engine.hub_ids])

    return go


def loop_path(exp: Experiment) -> Callable[[], list[np.ndarray]]:
    """Set up the plain per-worker loop (not timed); return the call that runs the rounds."""
    cfg, data, h = exp.cfg, exp.dataset, exp.hierarchy
    models = [
        build_model(cfg.model.name, data.input_shape, data.num_classes)
        for _ in range(h.num_workers)
    ]
    local = [(data.x_train[p].contiguous(), data.y_train[p].contiguous()) for p in exp.partitions]
    init = {k: torch.from_numpy(a.numpy().copy()) for k, a in initial_model(exp).items()}
    v, mix = torch.from_numpy(h.v), torch.from_numpy(exp.mixing)
    members = [list(h.members(d)) for d in range(h.num_hubs)]
    tau, q, lr, seed, batch = int(cfg.tau), int(cfg.q), float(cfg.lr), int(cfg.seed), cfg.batch_size

    def go() -> list[np.ndarray]:
        hubs = [dict(init) for _ in range(h.num_hubs)]
        for server_round in range(1, int(cfg.rounds) + 1):
            for worker, model in enumerate(models):
                with torch.no_grad():
                    for key, param in model.named_parameters():
                        param.copy_(hubs[h.hub_of[worker]][key])
                x, y = local[worker]
                coins, batches = step_schedule(
                    seed, server_round, worker, tau, float(h.rates[worker]), len(y), batch
                )
                params = list(model.parameters())
                for take, idx in zip(coins, batches, strict=True):
                    if take:
                        rows = torch.from_numpy(idx)
                        loss = F.cross_entropy(model(x[rows]), y[rows])
                        grads = torch.autograd.grad(loss, params)
                        with torch.no_grad():
                            for param, grad in zip(params, grads, strict=True):
                                param.sub_(lr * grad)
                        loss.item()  # the engine reports the mean loss
            with torch.no_grad():
                states = [dict(m.named_parameters()) for m in models]
                z = [
                    {
                        k: torch.stack([states[i][k].double() for i in members[d]])
                        .mul_(v[members[d]].view(-1, *[1] * init[k].dim()))
                        .sum(0)
                        .float()
                        for k in init
                    }
                    for d in range(h.num_hubs)
                ]
                if server_round % q == 0:
                    z = [
                        {
                            k: torch.einsum(
                                "j,j...->...", mix[:, d], torch.stack([zj[k].double() for zj in z])
                            ).float()
                            for k in init
                        }
                        for d in range(h.num_hubs)
                    ]
            hubs = z
        return flat([{k: t.numpy() for k, t in hub.items()} for hub in hubs])

    return go


def bench(name: str, overrides: list[str], reps: int, folder: Path, args: Any) -> dict[str, Any]:
    """Time one config both ways, interleaved; return seconds per step and the result gap."""
    extra = [
        f"data.name={args.data}",
        f"output_dir={folder / name.replace(' ', '_')}",
        f"simulation.threads={args.threads}",
    ]
    cfg = validate(load_config(None, [*COMMON, *overrides, *extra]))
    exp = prepare(cfg)
    torch.set_num_threads(args.threads)
    runs = {"engine": engine_path(exp), "loop": loop_path(exp)}
    results = {path: go() for path, go in runs.items()}  # warm-up: caches, first-call costs
    best: dict[str, float] = {}
    for _ in range(reps):
        for path, go in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            results[path] = go()
            for key, seconds in (
                (path, time.perf_counter() - start),
                (f"{path}-cpu", time.process_time() - cpu),
            ):
                best[key] = min(best.get(key, float("inf")), seconds)
    h = exp.hierarchy
    steps = int(cfg.rounds) * int(cfg.tau) * h.num_workers  # p = 1: every coin comes up
    gap = max(
        float(np.abs(a - b).max()) for a, b in zip(results["engine"], results["loop"], strict=True)
    )
    return {"name": name, "workers": h.num_workers, "steps": steps, "best": best, "gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=None, help="a comma list among: " + ", ".join(CONFIGS))
    parser.add_argument("--data", default="mnist", choices=["mnist", "digits"])
    args = parser.parse_args()
    serve_synthetic(synthetic_mnist())
    only = None if args.only is None else {s.strip() for s in args.only.split(",")}
    rows = []
    with TemporaryDirectory() as tmp:
        for name, overrides in CONFIGS.items():
            if only and name not in only:
                continue
            rows.append(bench(name, overrides, args.reps, Path(tmp), args))
            print(f"done: {rows[-1]}", flush=True)
    print(f"\ndata {args.data}, torch threads {args.threads}, best of {args.reps} interleaved\n")
    print(
        "| config | workers | engine ms/step | loop ms/step | engine / loop (wall) "
        "| engine / loop (CPU) | max gap |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        engine, loop, engine_cpu, loop_cpu = (
            1e3 * row["best"][p] / row["steps"]
            for p in ("engine", "loop", "engine-cpu", "loop-cpu")
        )
        print(
            f"| {row['name']} | {row['workers']} | {engine:.3f} | {loop:.3f} "
            f"| {engine / loop:.2f} | {engine_cpu / loop_cpu:.2f} | {row['gap']:.1e} |"
        )


if __name__ == "__main__":
    main()
