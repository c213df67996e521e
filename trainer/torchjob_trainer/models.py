"""Small built-in models: an MLP, a CNN and torchvision's ResNet-18, sized from the sample shape."""

from __future__ import annotations

import math

from torch import nn


def build_model(name: str, sample_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(sample_shape), 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
    channels = sample_shape[0] if len(sample_shape) == 3 else 1
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, num_classes),
        )
    if name == "resnet18":
        import torchvision  # noqa: PLC0415  (slow import, only this model needs it)

        model: nn.Module = torchvision.models.resnet18(num_classes=num_classes)
        if channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model
    raise ValueError(f"--model (TORCHJOB_MODEL): unknown model {name!r}")
