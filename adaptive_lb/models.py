"""Classifiers by name: a small CNN for 28x28, CIFAR-style ResNet-20/32, any torchvision classifier, and a
character-level bidirectional GRU for names.

``create_model(cfg, in_channels, num_classes)`` is the one entry point; every image model maps
``(B, in_channels, H, W)`` float images to ``(B, num_classes)`` logits; ``char_gru`` maps ``(B, L)`` int64
character codes (0 = padding, ``in_channels`` codes in all) to logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adaptive_lb.config import ModelConfig
from adaptive_lb.errors import ConfigError


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CosineHead(nn.Module):
    """``cos(feature, class vector)`` logits in [-1, 1] (LDAM's normed linear layer); scale them in the loss."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()  # (B, C)


def _head(kind: str, in_features: int, num_classes: int) -> nn.Module:
    return CosineHead(in_features, num_classes) if kind == "cosine" else nn.Linear(in_features, num_classes)


class SmallCNN(nn.Sequential):
    """Three conv stages (w, 2w, 4w channels; pooled 28 -> 14 -> 7), global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, head: str = "linear") -> None:
        w = width
        super().__init__(
            *_conv_bn(in_channels, w), nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            _head(head, 4 * w, num_classes),
        )


class _BasicBlock(nn.Module):
    """ResNet basic block with the parameter-free 'option A' shortcut of He et al. for CIFAR."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin  # zero channels added to the subsampled shortcut
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            sub = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(sub, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (16/32/64 channels), as used by the LDAM and CB-loss papers."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, head: str = "linear") -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn(in_channels, 16))
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _head(head, 64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class CharGRU(nn.Module):
    """Embedding -> bidirectional GRU over the packed (unpadded) characters -> last hidden states of both
    directions -> linear or cosine head. Padding never reaches the GRU, so it cannot change a name's logits."""

    def __init__(self, num_codes: int, num_classes: int, embed_dim: int = 32, hidden: int = 64, layers: int = 1,
                 head: str = "linear") -> None:
        super().__init__()
        self.embed = nn.Embedding(num_codes, embed_dim, padding_idx=0)
        self.gru = nn.GRU(embed_dim, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = _head(head, 2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != 0).sum(dim=1).clamp_min(1).cpu()  # (B,) packing needs them on the CPU: one sync
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (layers * 2, B, hidden), in the batch's own order
        return self.head(torch.cat([h[-2], h[-1]], dim=1))


class _ToRGB(nn.Module):
    """Repeats a grey channel three times so ImageNet-shaped torchvision models accept it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


def _torchvision_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(f"model.name: 'tv:{name}' is not a torchvision classifier; e.g. tv:resnet18, "
                          "tv:mobilenet_v3_small (see torchvision.models.list_models())")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels == 1:
        return nn.Sequential(_ToRGB(), model)
    if in_channels != 3:
        raise ConfigError(f"model.name: torchvision models take 1 or 3 channels, the data has {in_channels}")
    return model


MODELS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {
    "small_cnn": lambda cfg, cin, k: SmallCNN(cin, k, cfg.width, cfg.head),
    "resnet20": lambda cfg, cin, k: CifarResNet(20, cin, k, cfg.head),
    "resnet32": lambda cfg, cin, k: CifarResNet(32, cin, k, cfg.head),
    "char_gru": lambda cfg, codes, k: CharGRU(codes, k, cfg.embed_dim, cfg.width, cfg.layers, cfg.head),
}


def create_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    """Build model ``cfg.name`` (``tv:<name>`` for torchvision classifiers)."""
    if cfg.name.startswith("tv:"):
        return _torchvision_model(cfg.name[3:], in_channels, num_classes)
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name: unknown model '{cfg.name}'; use one of {', '.join(MODELS)} "
                          "or tv:<torchvision model name>")
    return MODELS[cfg.name](cfg, in_channels, num_classes)
