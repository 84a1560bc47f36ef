"""The models of the baseline (the paper's) and how the server scores one."""

from functools import lru_cache

import torch
from flwr.app import ArrayRecord
from torch import nn
from torch.nn import functional as F

from flwr_multilevel.experiment.models import build_model, resolve_device

from .dataset import Split, load_data


def device_of(name: str) -> str:
    """Return the torch device of ``device`` (``cpu``, ``cuda`` or ``auto``)."""
    return str(resolve_device(name))


def get_model(name: str, split: Split) -> nn.Module:
    """Return a new model for the data set of ``split``.

    ``logreg`` (multinomial logistic regression), ``cnn`` (the paper's CNN)
    or ``resnet18``.
    """
    data = load_data(split)
    return build_model(name, data.input_shape, data.num_classes)


@lru_cache(maxsize=8)
def resident_model(name: str, split: Split, device: str) -> nn.Module:
    """Return a model kept for the life of the process (weights overwritten each round)."""
    return get_model(name, split).to(device)


def initial_arrays(name: str, split: Split, seed: int) -> ArrayRecord:
    """Return ``x_1``: the model initialised after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return ArrayRecord(get_model(name, split).state_dict())


@torch.no_grad()
def test(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu"
) -> tuple[float, float]:
    """Return the mean cross-entropy loss and the accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(y), 2048):
        inputs, labels = x[start : start + 2048].to(device), y[start : start + 2048].to(device)
        logits = model(inputs)
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
    return loss / len(y), correct / len(y)
