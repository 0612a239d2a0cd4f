"""Small built-in networks for tabular and image data: `mlp` and `cnn`."""
from __future__ import annotations

import math

from torch import Tensor, nn

from kdforge.registry import MODELS


@MODELS.register("mlp")
class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] × len(hidden) -> Linear.

    Submodules are named `layers.0`, `layers.1`, ... (one per hidden block) and
    `head`, so a hint term can tap `layers.0` of the student and `layers.1` of the teacher.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int] = (256, 256), dropout: float = 0.0):
        super().__init__()
        width = math.prod(input_shape)
        blocks = []
        for h in hidden:
            blocks.append(nn.Sequential(nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)))
            width = h
        self.layers = nn.ModuleList(blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, D)
        for block in self.layers:
            x = block(x)
        return self.head(x)  # (B, C)


@MODELS.register("cnn")
class CNN(nn.Module):
    """[Conv3×3 -> BatchNorm -> ReLU] per channel count, 2×2 max-pool after each but the last
    (when the map allows), global average pool, Linear. Blocks are `layers.0`, `layers.1`, ..."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: list[int] = (16, 32), dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs image inputs (C, H, W); this dataset gives {tuple(input_shape)}")
        c, h, _ = input_shape
        blocks = []
        for i, out in enumerate(channels):
            parts: list[nn.Module] = [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if i < len(channels) - 1 and h >= 4:
                parts.append(nn.MaxPool2d(2))
                h //= 2
            blocks.append(nn.Sequential(*parts))
            c = out
        self.layers = nn.ModuleList(blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.layers:
            x = block(x)  # (B, C_i, H_i, W_i)
        return self.head(self.pool(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
