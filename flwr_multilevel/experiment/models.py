"""The paper's models: multinomial logistic regression, its small CNN and ResNet-18."""

import torch
from torch import nn

from flwr_multilevel.errors import ConfigError

MODELS = ("logreg", "cnn", "resnet18")


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


def resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return torchvision's ResNet-18 in the CIFAR variant (the paper's CIFAR-10 model).

    The stem is a 3x3 stride-1 convolution without max-pooling, as usual for
    32x32 inputs; BatchNorm running statistics travel with the weights and are
    averaged like them (``num_batches_tracked`` rounded).
    """
    from torchvision.models import resnet18 as tv_resnet18  # pylint: disable=import-outside-toplevel

    model = tv_resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model


def resolve_device(name: str) -> torch.device:
    """Return the torch device of ``simulation.device``: ``cpu``, ``cuda`` or ``auto``.

    Raises
    ------
    ConfigError
        ``simulation.device``: an unknown name, or ``cuda`` without a GPU.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("simulation.device", "expected a CUDA GPU for 'cuda'; none is visible")
    if name not in ("cpu", "cuda"):
        raise ConfigError("simulation.device", f"expected cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return a freshly initialised model by name (one of ``MODELS``).

    Raises
    ------
    ConfigError
        Unknown name, or a CNN (ResNet) on inputs smaller than 4x4 (8x8).
    """
    if name == "logreg":
        return LogisticRegression(input_shape, num_classes)
    if name == "cnn":
        if len(input_shape) != 3 or min(input_shape[1:]) < 4:
            raise ConfigError(
                "model.name", f"cnn needs image inputs of at least 4x4, got {input_shape}"
            )
        return CNN(input_shape, num_classes)
    if name == "resnet18":
        if len(input_shape) != 3 or min(input_shape[1:]) < 8:
            raise ConfigError(
                "model.name", f"resnet18 needs image inputs of at least 8x8, got {input_shape}"
            )
        return resnet18(input_shape, num_classes)
    raise ConfigError("model.name", f"expected one of {', '.join(MODELS)}, got {name!r}")
