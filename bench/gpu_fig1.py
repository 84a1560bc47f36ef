"""The paper's Fig. 1 EMNIST-size run on the batched path, on a GPU, with synthetic data.

100 workers, the paper's CNN, batch 300, 6,400 time steps, tau / q / hubs / lr /
seed of one run of ``baselines/paper/fig1_emnist.yaml`` (default: "MLL-SGD q=4
tau=8"). The data are synthesised, MNIST-shaped and EMNIST-letters-sized
(124,800 x 1x28x28, 26 classes, seeded class prototypes plus noise), so the
script needs no download and no Flower: torch, numpy, networkx, pyyaml and
this repository's ``flwr_multilevel`` package. It prints the wall time, the
time per time step and per worker step, the gradient method it chose, a plain
per-worker PyTorch loop doing the same kind of steps for comparison, and the
loss of ``u`` before and after; with ``$OUT`` set it writes
``$OUT/gpu_fig1.json``. With ``--budget-s`` it stops early and extrapolates.

    PYTHONPATH=. python bench/gpu_fig1.py --device cuda --budget-s 300
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from flwr_multilevel.engines.batched_mllsgd import BatchedMLLSGD, RoundResult  # noqa: E402
from flwr_multilevel.experiment.data import partition  # noqa: E402
from flwr_multilevel.experiment.models import build_model  # noqa: E402
from flwr_multilevel.model.hierarchy import build_hierarchy  # noqa: E402
from flwr_multilevel.model.mixing import complete_mixing  # noqa: E402

COIN_STREAM, BATCH_STREAM = 0, 1
CONFIG = ROOT / "baselines" / "paper" / "fig1_emnist.yaml"


# pylint: disable=too-many-arguments
def step_schedule(
    seed: int,
    server_round: int,
    worker_id: int,
    time_steps: int,
    rate: float,
    num_examples: int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Copy of ``clients.worker.step_schedule`` without its Flower import (a test pins it)."""
    coin_rng = np.random.default_rng([seed, server_round, worker_id, COIN_STREAM])
    batch_rng = np.random.default_rng([seed, server_round, worker_id, BATCH_STREAM])
    coins = coin_rng.random(time_steps) < rate
    size = min(batch_size, num_examples)
    batches = np.stack(
        [batch_rng.choice(num_examples, size=size, replace=False) for _ in range(time_steps)]
    )
    return coins, batches


def synthetic_data(
    examples: int, classes: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return MNIST-shaped inputs in [0, 1] (a seeded prototype per class plus noise) and labels."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    prototypes = torch.rand(classes, 1, 28, 28, generator=gen)
    labels = torch.randint(0, classes, (examples,), generator=gen)
    noise = torch.rand(examples, 1, 28, 28, generator=gen)
    features = (0.6 * prototypes[labels] + 0.4 * noise).clamp_(0, 1)
    return features.to(device), labels.to(device)


def sync(device: torch.device) -> None:
    """Wait for the device."""
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def loss_of_u(
    model: torch.nn.Module,
    hubs: dict[str, torch.Tensor],
    b: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[float, float]:
    """Loss and accuracy of ``u = sum_d b_d y_d`` on (x, y)."""
    weights = torch.as_tensor(b, dtype=torch.float64, device=x.device)
    state = {k: torch.tensordot(weights, v.double(), dims=1).to(v.dtype) for k, v in hubs.items()}
    model.load_state_dict(state)
    loss, correct = 0.0, 0
    for start in range(0, len(y), 4096):
        logits = model(x[start : start + 4096])
        loss += float(F.cross_entropy(logits, y[start : start + 4096], reduction="sum"))
        correct += int((logits.argmax(1) == y[start : start + 4096]).sum())
    return loss / len(y), correct / len(y)


def plain_loop_step_s(
    x: torch.Tensor, y: torch.Tensor, parts: list[np.ndarray], batch: int, lr: float, steps: int
) -> float:
    """Seconds per time step of a plain per-worker loop: one model per worker, one step each."""
    device = x.device
    torch.manual_seed(0)
    models = [build_model("cnn", (1, 28, 28), int(y.max()) + 1).to(device) for _ in parts]
    rng = np.random.default_rng(0)
    local = [torch.from_numpy(p).to(device) for p in parts]

    def one_time_step() -> None:
        for model, rows in zip(models, local, strict=True):
            idx = rows[torch.from_numpy(rng.choice(len(rows), batch, replace=False)).to(device)]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            grads = torch.autograd.grad(loss, list(model.parameters()))
            with torch.no_grad():
                for param, grad in zip(model.parameters(), grads, strict=True):
                    param.sub_(lr * grad)

    one_time_step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_time_step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:  # pylint: disable=too-many-locals,too-many-statements
    """Run the benchmark and print (and save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="MLL-SGD q=4 tau=8", help="a run of fig1_emnist.yaml")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--examples", type=int, default=124_800)
    parser.add_argument("--classes", type=int, default=26)
    parser.add_argument("--time-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--budget-s", type=float, default=None, help="stop early, extrapolate")
    parser.add_argument("--gradients", default="tune", choices=["tune", "cnn", "vmap"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--loop-steps", type=int, default=2, help="plain-loop time steps timed")
    args = parser.parse_args()

    spec = yaml.safe_load(CONFIG.read_text())
    run = {**spec["common"], **spec["runs"][args.run]}
    tau, q, seed, lr, batch = run["tau"], run["q"], run["seed"], run["lr"], run["batch_size"]
    batch = args.batch_size or batch
    time_steps = args.time_steps or run["time_steps"]
    rounds = -(-time_steps // tau)
    sizes = [run["hubs"]["workers"]] * run["hubs"]["count"]
    device = torch.device(args.device)
    setup = time.perf_counter()
    torch.backends.cudnn.benchmark = True

    x, y = synthetic_data(args.examples, args.classes, seed, device)
    parts = partition(y.cpu().numpy(), sum(sizes), run["data"]["partition"], seed)
    weights = np.array([len(p) for p in parts], dtype=np.float64)
    hierarchy = build_hierarchy(sizes, weights, np.full(sum(sizes), run["rates"]["p"]))
    mixing = complete_mixing(hierarchy.b)  # the config's complete hub graph
    torch.manual_seed(seed)
    model = build_model("cnn", (1, 28, 28), args.classes).to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def runner(method: str) -> BatchedMLLSGD:
        return BatchedMLLSGD(
            build_model("cnn", (1, 28, 28), args.classes),
            x,
            y,
            parts,
            hierarchy,
            mixing,
            tau=tau,
            q=q,
            lr=lr,
            batch_size=batch,
            seed=seed,
            schedule=step_schedule,
            device=device,
            gradients=method,
        )

    tuning: dict[str, float] = {}
    method = args.gradients
    if method == "tune":  # 2 warm-up rounds (cuDNN picks algorithms), then 2 timed
        for candidate in ("cnn", "vmap"):
            trial = runner(candidate)
            trial.run(initial, 2)
            sync(device)
            start = time.perf_counter()
            trial.run(initial, 2, first_round=3)
            sync(device)
            tuning[candidate] = (time.perf_counter() - start) / (2 * tau)
        method = min(tuning, key=tuning.__getitem__)
        print(f"tuning, s per time step: {tuning} -> {method}", flush=True)
    sample = torch.from_numpy(
        np.random.default_rng(1).choice(args.examples, min(10_000, args.examples), False)
    )
    x_eval, y_eval = x[sample.to(device)], y[sample.to(device)]
    hubs0 = {k: v.unsqueeze(0).repeat(len(sizes), *[1] * v.dim()) for k, v in initial.items()}
    before = loss_of_u(model, hubs0, hierarchy.b, x_eval, y_eval)
    batched = runner(method)
    setup_s = time.perf_counter() - setup

    done = {"rounds": 0}
    start = time.perf_counter()

    def on_round(server_round: int, _result: RoundResult) -> bool:
        done["rounds"] = server_round
        if args.budget_s is None or server_round % 25:
            return False
        sync(device)
        return time.perf_counter() - start > args.budget_s

    final = batched.run(initial, rounds, on_round)
    sync(device)
    wall = time.perf_counter() - start
    after = loss_of_u(model, final, hierarchy.b, x_eval, y_eval)
    steps_run = done["rounds"] * tau
    per_step = wall / steps_run
    loop_per_step = plain_loop_step_s(x, y, parts, batch, lr, args.loop_steps)

    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "run": args.run,
        "workers": sum(sizes),
        "hubs": len(sizes),
        "tau": tau,
        "q": q,
        "batch_size": batch,
        "examples": args.examples,
        "gradients": method,
        "tuning_s_per_time_step": tuning,
        "setup_s": round(setup_s, 2),
        "time_steps_run": steps_run,
        "time_steps_target": rounds * tau,
        "wall_s": round(wall, 2),
        "s_per_time_step": per_step,
        "us_per_worker_step": per_step / sum(sizes) * 1e6,
        "projected_full_run_s": round(per_step * rounds * tau, 1),
        "plain_loop_s_per_time_step": loop_per_step,
        "plain_loop_over_batched": loop_per_step / per_step,
        "loss_accuracy_of_u_before": before,
        "loss_accuracy_of_u_after": after,
        "peak_gpu_memory_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
        ),
    }
    for key, value in result.items():
        print(f"{key:28s} {value}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_fig1.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
