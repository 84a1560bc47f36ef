"""The paper's models: multinomial logistic regression and its small CNN."""

import torch
from torch import nn

from .errors import ConfigError

MODELS = ("logreg", "cnn")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression on flattened inputs."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        in_features = 1
        for dim in input_shape:
            in_features *= dim
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.linear(x.flatten(1))


class CNN(nn.Module):
    """The paper's CNN: two 5x5 conv layers (10 and 20 channels), FC 100.

    conv(C->10, 5x5, pad 2) -> ReLU -> maxpool 2 -> conv(10->20, 5x5, pad 2)
    -> ReLU -> maxpool 2 -> FC -> 100 -> ReLU -> FC -> classes. On 28x28
    inputs the first FC layer has 980 inputs, as in the reference code.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 10, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(10, 20, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = 20 * (height // 4) * (width // 4)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.classifier(self.features(x))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return a freshly initialised model by name (``logreg`` or ``cnn``).

    Raises
    ------
    ConfigError
        Unknown name, or a CNN on inputs smaller than 4x4.
    """
    if name == "logreg":
        return LogisticRegression(input_shape, num_classes)
    if name == "cnn":
        if len(input_shape) != 3 or min(input_shape[1:]) < 4:
            raise ConfigError(
                "model.name", f"cnn needs image inputs of at least 4x4, got {input_shape}"
            )
        return CNN(input_shape, num_classes)
    raise ConfigError("model.name", f"expected one of {', '.join(MODELS)}, got {name!r}")
