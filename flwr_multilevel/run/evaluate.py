"""The server's evaluation of a run: u = sum_d b_d y_d and every hub model, on fixed data."""

from collections.abc import Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch.nn import functional as F

from flwr_multilevel.experiment.local_data import fixed_sample
from flwr_multilevel.experiment.models import build_model, resolve_device
from flwr_multilevel.experiment.prepare import Experiment
from flwr_multilevel.model.mixing import consensus_distance, weighted_average
from flwr_multilevel.protocol.arrays import stack, unstack


class Evaluator:
    """Loss and accuracy of ``u = sum_d b_d y_d`` and of every hub model."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        data = exp.dataset
        self.device = resolve_device(str(exp.cfg.simulation.device))
        model = build_model(exp.cfg.model.name, data.input_shape, data.num_classes)
        self.model = model.to(self.device)
        # a fixed, seeded sample: the same examples at every evaluation of every run
        self.x_train, self.y_train = fixed_sample(
            data.x_train, data.y_train, exp.cfg.eval.train_examples, int(exp.cfg.seed)
        )

    @torch.no_grad()
    def _score(self, arrays: ArrayRecord, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        self.model.eval()
        loss, correct = 0.0, 0
        for start in range(0, len(y), 2048):
            inputs = x[start : start + 2048].to(self.device)
            labels = y[start : start + 2048].to(self.device)
            logits = self.model(inputs)
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
        return loss / len(y), correct / len(y)

    def __call__(self, hub_models: Sequence[ArrayRecord]) -> dict[str, float]:
        """Return the metrics of one evaluation.

        ``loss`` (training loss of u), ``test_loss``, ``accuracy`` (of u),
        ``consensus`` and, with ``eval.hubs``, ``hub<d>_accuracy`` for every
        hub (scored once when every hub holds the same model).
        """
        data, b = self.exp.dataset, self.exp.hierarchy.b
        stacked, layout = stack(hub_models)
        u = unstack(weighted_average(b, stacked)[None, :], layout)[0]
        test_loss, accuracy = self._score(u, data.x_test, data.y_test)
        train_loss = (
            self._score(u, self.x_train, self.y_train)[0]
            if self.exp.cfg.eval.train_loss
            else float("nan")
        )
        row = {
            "loss": train_loss,
            "test_loss": test_loss,
            "accuracy": accuracy,
            "consensus": consensus_distance(b, stacked),
        }
        if not self.exp.cfg.eval.hubs:
            return row
        if np.array_equal(stacked.min(axis=0), stacked.max(axis=0)):  # hubs agree: score once
            return {**row, **{f"hub{d}_accuracy": accuracy for d in range(len(hub_models))}}
        for hub, arrays in enumerate(hub_models):
            row[f"hub{hub}_accuracy"] = self._score(arrays, data.x_test, data.y_test)[1]
        return row
