"""What a checkpoint must hold to continue a run, checked before anything is used or changed.

A checkpoint in the right format (:mod:`flwr_multilevel.run.checkpoint`) can
still hold the wrong things: another run's hubs or model, edited counters, or
sit beside another run's CSV files. :func:`check_contents` holds its
contents to the run's network and initial model; :func:`check_rows` holds the
CSV rows to the checkpoint's counters and history row. Each raises a
one-line :class:`ConfigError` naming what is wrong.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.run.recorder import RunPlan
from flwr_multilevel.run.state import decode

ENGINE_KEYS = ("round", "models", "strategies", "weights", "failed_in_a_row")
COUNTER_KEYS = ("steps_taken", "time_slot", "bytes_worker_hub", "bytes_hub_hub", "eval_s")


def _refuse(what: str) -> ConfigError:
    return ConfigError("--resume", f"checkpoint.pt: {what}")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _by_hub(value: Any, name: str, plan: RunPlan) -> dict[int, Any]:
    hubs = list(range(plan.num_hubs))
    if not isinstance(value, dict) or sorted(value, key=str) != sorted(hubs, key=str):
        raise _refuse(f"mll.{name}: expected an entry for each of hubs 0..{plan.num_hubs - 1}")
    return value


def _check_model(d: int, model: Any, initial: ArrayRecord) -> None:
    arrays = decode(model)
    if not isinstance(arrays, dict) or set(arrays) != set(initial.keys()):
        raise _refuse(f"mll.models.{d}: expected the arrays {sorted(initial.keys())}")
    for key, array in initial.items():
        got = arrays[key]
        want = array.numpy()
        if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
            raise _refuse(f"mll.models.{d}.{key}: expected {want.dtype} of shape {want.shape}")


def check_engine(mll: Any, initial: ArrayRecord, plan: RunPlan, last: int) -> None:
    """Hold the engine's state to the run: its round, hubs, models, strategies and weights.

    Raises
    ------
    ConfigError
        ``--resume``: the first thing that does not fit.
    """
    if not isinstance(mll, dict) or any(key not in mll for key in ENGINE_KEYS):
        raise _refuse(f"mll: expected a table of {', '.join(ENGINE_KEYS)}")
    if mll["round"] != last:
        raise _refuse(f"mll.round: expected {last}, the checkpoint's round")
    for d, model in _by_hub(mll["models"], "models", plan).items():
        _check_model(d, model, initial)
    for d, strategy in _by_hub(mll["strategies"], "strategies", plan).items():
        if not (isinstance(strategy, tuple) and strategy[:1] == ("strategy",)):
            raise _refuse(f"mll.strategies.{d}: expected a hub strategy's attributes")
        if not isinstance(strategy[1], dict) or not all(isinstance(k, str) for k in strategy[1]):
            raise _refuse(f"mll.strategies.{d}: expected a table of attributes")
    for d, weights in _by_hub(mll["weights"], "weights", plan).items():
        if not isinstance(weights, dict) or not all(
            w is None or isinstance(w, (int, float)) for w in weights.values()
        ):
            raise _refuse(f"mll.weights.{d}: expected a number (or none yet) per worker")
    failed = mll["failed_in_a_row"]
    if not isinstance(failed, dict) or not all(_integer(n) for n in failed.values()):
        raise _refuse("mll.failed_in_a_row: expected a count per hub")


def check_counters(state: Mapping[str, Any], plan: RunPlan) -> None:
    """Hold the recorder's counters and clock to the run's workers.

    Raises
    ------
    ConfigError
        ``--resume``: a missing counter, or one of the wrong kind or size.
    """
    counters = state["counters"]
    if not isinstance(counters, dict) or any(key not in counters for key in COUNTER_KEYS):
        raise _refuse(f"counters: expected {', '.join(COUNTER_KEYS)}")
    steps = decode(counters["steps_taken"])
    if not isinstance(steps, np.ndarray) or steps.shape != (plan.num_workers,):
        raise _refuse(f"counters.steps_taken: expected one count per worker ({plan.num_workers})")
    for key in ("time_slot", "bytes_worker_hub", "bytes_hub_hub"):
        if not _integer(counters[key]) or counters[key] < 0:
            raise _refuse(f"counters.{key}: expected an integer >= 0")
    for value, name in ((counters["eval_s"], "counters.eval_s"), (state["elapsed"], "elapsed")):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise _refuse(f"{name}: expected seconds >= 0")
    if not isinstance(state["last_row"], dict) or not state["last_row"]:
        raise _refuse("last_row: expected the history row of its round")


def check_rows(
    state: Mapping[str, Any], history: list[dict[str, str]], rounds: list[dict[str, str]]
) -> None:
    """Hold the CSV rows to the checkpoint: its history row, clock and step count.

    Raises
    ------
    ConfigError
        ``--resume``: rows of another run (or edited ones) beside the checkpoint.
    """
    last, counters = int(state["round"]), state["counters"]
    written = [r for r in history if r.get("round") == str(last)]
    expected = {k: "" if v is None else str(v) for k, v in state["last_row"].items()}
    if written and written[0] != expected:
        raise ConfigError(
            "--resume", f"history.csv: the row of round {last} is not the checkpoint's"
        )
    upto = [r for r in rounds if int(r["round"]) <= last]
    try:
        time_slot = int(upto[-1]["time_slot"])
        steps = sum(int(r["steps"]) for r in upto)
    except (KeyError, ValueError, IndexError):
        raise ConfigError("--resume", "rounds.csv: expected time_slot and steps columns") from None
    if time_slot != counters["time_slot"] or steps != int(decode(counters["steps_taken"]).sum()):
        raise ConfigError(
            "--resume", f"rounds.csv: rounds 1..{last} are not the checkpoint's (clock or steps)"
        )
