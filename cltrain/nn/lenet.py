"""LeNet-5 (two conv + three fully connected layers), the expert network of TAME on the MNIST family."""
from __future__ import annotations

from torch import nn

from cltrain.config import ModelConfig
from cltrain.nn.registry import MODELS


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, image_size: int, n_classes: int):
        super().__init__()
        # 'same' padding on the first conv keeps the classic 5x5x16 feature map for 28x28 inputs.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = ((image_size // 2) - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, n_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register("lenet")
def build_lenet(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    return LeNet5(input_shape[0], input_shape[-1], n_classes)
