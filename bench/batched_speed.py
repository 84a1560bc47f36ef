"""Batched path against a plain per-worker PyTorch loop and the message engine, side by side.

Each config runs the same rounds, with the same data, initial model, draws
(``step_schedule``), hub averaging and mixing, three ways in this one process,
interleaved over ``--reps`` repetitions (the fastest repetition of each counts):

* ``batched``: :class:`flwr_multilevel.engines.batched_mllsgd.BatchedMLLSGD`,
* ``loop``: one model per worker, a plain PyTorch SGD step per coin, the hub
  averages and gossip as tensor sums (the bench's own, no Flower),
* ``engine``: the message engine in-process (MLLSGD + ClientApp on LocalGrid),
* ``before`` (with ``--before REF``): the batched path as of git ``REF``, for
  before/after figures measured side by side.

The data are MNIST-shaped and synthetic (60,000 x 1x28x28, 10 classes,
seeded), served to every path under the name ``mnist``, or the embedded
``digits`` (1,347 x 1x8x8) with ``--data digits``; the script also prints
how far the three results are apart. Prints a markdown table of seconds per
round and the ratios loop / batched and engine / batched.

    PYTHONPATH=. python bench/batched_speed.py [--data mnist|digits] [--reps 2] [--threads 1|0]
        [--only logreg-100] [--before GIT_REF]
"""

import argparse
import importlib
import re
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory, mkdtemp
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from torch.nn import functional as F

import flwr_multilevel.client_app as client_app_module
import flwr_multilevel.experiment.local_data as local_data_module
import flwr_multilevel.experiment.prepare as experiment_module
from flwr_multilevel.clients.worker import step_schedule
from flwr_multilevel.engines.batched_mllsgd import BatchedMLLSGD
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.experiment.config import load_config, validate
from flwr_multilevel.experiment.data import Dataset
from flwr_multilevel.experiment.models import build_model
from flwr_multilevel.experiment.prepare import (
    Experiment,
    build_mllsgd,
    initial_model,
    prepare,
    train_config,
)

CONFIGS: dict[str, list[str]] = {
    "logreg-100": ["hubs.count=10", "hubs.workers=10", "model.name=logreg", "rounds=3"],
    "logreg-1000": [
        "hubs.count=20",
        "hubs.workers=50",
        "hubs.graph=ring",
        "model.name=logreg",
        "rounds=2",
    ],
    "cnn-100": ["hubs.count=10", "hubs.workers=10", "model.name=cnn", "rounds=2", "tau=4"],
}
COMMON = [
    "batch_size=32",
    "tau=8",
    "q=4",
    "lr=0.05",
    "rates.distribution=uniform",
    "rates.low=0.5",
    "simulation.backend=inprocess",
    "overwrite=true",
]


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
    """Make every path load ``data`` under the name ``mnist`` (no download)."""
    original = experiment_module.load_dataset

    def load(name: str, root: str = "data") -> Dataset:
        return data if name == "mnist" else original(name, root)

    experiment_module.load_dataset = load  # type: ignore[assignment]
    local_data_module.load_dataset = load  # type: ignore[assignment]


def initial_state(exp: Experiment) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(a.numpy()) for k, a in initial_model(exp).items()}


def batched_at(ref: str) -> type[BatchedMLLSGD]:
    """Return ``BatchedMLLSGD`` as of git ``ref``: its batched modules, the rest from this tree.

    ``flwr_multilevel/batched.py`` and ``batched_grads.py`` of ``ref`` are
    loaded as the package ``batched_at_ref`` (their other relative imports
    point at this tree's ``flwr_multilevel``), so a before/after comparison
    runs side by side in one process.
    """
    folder = Path(mkdtemp()) / "batched_at_ref"
    folder.mkdir()
    (folder / "__init__.py").write_text("", encoding="utf-8")
    for name in ("batched", "batched_grads"):
        text = subprocess.run(
            ["git", "show", f"{ref}:flwr_multilevel/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        text = re.sub(
            r"from \.(?!batched_grads )(\w+) import", r"from flwr_multilevel.\1 import", text
        )
        (folder / f"{name}.py").write_text(text, encoding="utf-8")
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("batched_at_ref.batched").BatchedMLLSGD  # type: ignore[no-any-return]


def run_batched(
    exp: Experiment, runner_class: type[BatchedMLLSGD] = BatchedMLLSGD
) -> Callable[[], list[np.ndarray]]:
    """Set up the batched path; return the call that runs it."""
    cfg, data = exp.cfg, exp.dataset
    runner = runner_class(
        build_model(cfg.model.name, data.input_shape, data.num_classes),
        data.x_train,
        data.y_train,
        exp.partitions,
        exp.hierarchy,
        exp.mixing,
        tau=cfg.tau,
        q=cfg.q,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        schedule=step_schedule,
    )
    init = initial_state(exp)

    def go() -> list[np.ndarray]:
        final = runner.run(init, cfg.rounds)
        return [
            np.concatenate([final[k][d].numpy().ravel() for k in final])
            for d in range(exp.hierarchy.num_hubs)
        ]

    return go


def run_loop(exp: Experiment) -> Callable[[], list[np.ndarray]]:
    """Set up the plain per-worker loop (same draws, SGD, averaging, mixing); return its call."""
    cfg, data, h = exp.cfg, exp.dataset, exp.hierarchy
    models = [
        build_model(cfg.model.name, data.input_shape, data.num_classes)
        for _ in range(h.num_workers)
    ]
    local = [(data.x_train[p].contiguous(), data.y_train[p].contiguous()) for p in exp.partitions]
    init = initial_state(exp)
    return lambda: loop_rounds(exp, models, local, init)


def loop_rounds(  # pylint: disable=too-many-locals
    exp: Experiment,
    models: list[torch.nn.Module],
    local: list[tuple[torch.Tensor, torch.Tensor]],
    init: dict[str, torch.Tensor],
) -> list[np.ndarray]:
    """Run the rounds of the plain loop."""
    cfg, h = exp.cfg, exp.hierarchy
    v, mix = torch.from_numpy(h.v), torch.from_numpy(exp.mixing)
    hubs = [dict(init) for _ in range(h.num_hubs)]
    for server_round in range(1, cfg.rounds + 1):
        for worker, model in enumerate(models):
            with torch.no_grad():
                for key, param in model.named_parameters():
                    param.copy_(hubs[h.hub_of[worker]][key])
            x, y = local[worker]
            coins, batches = step_schedule(
                cfg.seed, server_round, worker, cfg.tau, h.rates[worker], len(y), cfg.batch_size
            )
            params = list(model.parameters())
            for take, batch in zip(coins, batches, strict=True):
                if not take:
                    continue
                idx = torch.from_numpy(batch)
                grads = torch.autograd.grad(F.cross_entropy(model(x[idx]), y[idx]), params)
                with torch.no_grad():
                    for param, grad in zip(params, grads, strict=True):
                        param.sub_(cfg.lr * grad)
        states = [dict(m.named_parameters()) for m in models]
        with torch.no_grad():
            z = []
            for hub in range(h.num_hubs):
                members = h.members(hub)
                z.append(
                    {
                        k: sum(float(v[i]) * states[i][k].double() for i in members).float()  # type: ignore[union-attr]
                        for k in init
                    }
                )
            if server_round % cfg.q == 0:
                z = [
                    {
                        k: sum(
                            float(mix[j, d]) * z[j][k].double() for j in range(h.num_hubs)
                        ).float()  # type: ignore[union-attr]
                        for k in init
                    }
                    for d in range(h.num_hubs)
                ]
            hubs = z
    return [np.concatenate([hub[k].numpy().ravel() for k in init]) for hub in hubs]


def run_engine(exp: Experiment) -> Callable[[], list[np.ndarray]]:
    """Set up the message engine in-process; return the call that runs it."""
    cfg = exp.cfg
    engine = build_mllsgd(exp)
    grid = LocalGrid(client_app_module.app, exp.hierarchy.num_workers)
    init = initial_model(exp)
    config = ConfigRecord(dict(train_config(exp)))  # type: ignore[arg-type]

    def go() -> list[np.ndarray]:
        engine.start(grid, init, int(cfg.rounds), train_config=config)
        models = [engine.models[d] for d in range(exp.hierarchy.num_hubs)]
        return [np.concatenate([a.numpy().ravel() for a in m.values()]) for m in models]

    return go


PATHS: dict[str, Callable[[Experiment], Callable[[], list[np.ndarray]]]] = {
    "batched": run_batched,
    "loop": run_loop,
    "engine": run_engine,
}


def bench(  # pylint: disable=too-many-arguments
    name: str,
    overrides: list[str],
    reps: int,
    folder: Path,
    data: str,
    paths: dict[str, Callable[[Experiment], Callable[[], list[np.ndarray]]]],
) -> dict[str, Any]:
    """Time one config on every path; return seconds per round and result differences."""
    # the engine's workers set torch threads from simulation.threads: keep the bench's
    threads = f"simulation.threads={torch.get_num_threads()}"
    extra = [f"data.name={data}", f"output_dir={folder / name}", threads]
    cfg = validate(load_config(None, [*COMMON, *overrides, *extra]))
    exp = prepare(cfg)
    best: dict[str, float] = {}
    results: dict[str, list[np.ndarray]] = {}
    runs = {path: setup(exp) for path, setup in paths.items()}  # set-up is not timed
    for go in runs.values():  # warm-up: caches, allocator, first-call costs
        go()
    for _ in range(reps):
        for path, go in runs.items():
            start = time.perf_counter()
            results[path] = go()
            seconds = (time.perf_counter() - start) / int(cfg.rounds)
            best[path] = min(best.get(path, float("inf")), seconds)
    diff = {
        path: max(
            float(np.abs(a - b).max())
            for a, b in zip(results[path], results["batched"], strict=True)
        )
        for path in paths
        if path != "batched"
    }
    return {
        "name": name,
        "workers": exp.hierarchy.num_workers,
        "tau": int(cfg.tau),
        "seconds": best,
        "diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default")
    parser.add_argument("--only", default=None, help="one of " + ", ".join(CONFIGS))
    parser.add_argument(
        "--data", default="mnist", choices=["mnist", "digits"], help="synthetic MNIST or digits"
    )
    parser.add_argument(
        "--before", default=None, help="git ref: also time the batched path as of that commit"
    )
    args = parser.parse_args()
    paths = dict(PATHS)
    if args.before:
        paths = {"before": partial(run_batched, runner_class=batched_at(args.before)), **paths}
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    serve_synthetic(synthetic_mnist())
    rows = []
    with TemporaryDirectory() as tmp:
        for name, overrides in CONFIGS.items():
            if args.only and name != args.only:
                continue
            rows.append(bench(name, overrides, args.reps, Path(tmp), args.data, paths))
            print(f"done: {rows[-1]}", flush=True)
    print(
        f"\ndata {args.data}, torch threads {torch.get_num_threads()}, seconds per round "
        f"(best of {args.reps})\n"
    )
    print_table(rows, "before" in paths)


def print_table(rows: list[dict[str, Any]], before: bool) -> None:
    """Print the markdown table (with the ``before`` columns when timed)."""
    extra = " before s | loop / before |" if before else ""
    print(
        f"| config | workers | tau |{extra} batched s | loop s | engine s | loop / batched "
        "| engine / batched | max diff loop, engine |"
    )
    print("| --- " * (9 + 2 * before) + "|")
    for row in rows:
        s, diff = row["seconds"], row["diff"]
        cells = f" {s['before']:.4f} | {s['loop'] / s['before']:.1f}x |" if before else ""
        print(
            f"| {row['name']} | {row['workers']} | {row['tau']} |{cells} {s['batched']:.4f} "
            f"| {s['loop']:.4f} | {s['engine']:.4f} | {s['loop'] / s['batched']:.1f}x "
            f"| {s['engine'] / s['batched']:.1f}x "
            f"| {diff['loop']:.1e}, {diff['engine']:.1e} |"
        )


if __name__ == "__main__":
    main()
