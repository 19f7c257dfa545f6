"""The DIDFuse encoder/decoder (Zhao et al., TNNLS), laid out as the authors' public code.

Every layer is ``pad -> 3x3 conv -> BatchNorm -> activation`` (method-notes, "Network"):

    layer  in   out  padding     activation   role
    conv1    1   64  reflection  PReLU        f1 (skip to conv7)
    conv2   64   64  zero        PReLU        f2 (skip to conv6)
    conv3   64   64  zero        tanh         base features B
    conv4   64   64  zero        tanh         detail features D (conv3 and conv4 both read f2)
    conv5  128   64  zero        PReLU        reads cat(B, D)
    conv6  128   64  zero        PReLU        reads cat(conv5, f2)
    conv7  128    1  reflection  sigmoid      reads cat(conv6, f1) -> image in [0, 1]

All tensors are batch-first ``(B, C, H, W)`` float; any H, W >= 2 works (3x3 convolutions with
padding 1 keep the size, there is no down-sampling).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

ARCHITECTURE = "didfuse-v1"


@dataclass(frozen=True)
class DIDFuseConfig:
    """Widths of the network; the defaults are the paper's."""

    in_channels: int = 1
    features: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


class Features(NamedTuple):
    """The four encoder outputs, each ``(B, features, H, W)``."""

    f1: Tensor
    f2: Tensor
    base: Tensor
    detail: Tensor


class ConvLayer(nn.Sequential):
    """``pad -> 3x3 conv -> BatchNorm -> activation``.

    The conv itself has no padding and a bias (as the public code); the padding is a separate
    module so reflection and zero padding read the same way.
    """

    def __init__(self, in_channels: int, out_channels: int, padding: str, activation: nn.Module):
        pad = nn.ReflectionPad2d(1) if padding == "reflection" else nn.ZeroPad2d(1)
        super().__init__(
            pad,
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=0, bias=True),
            nn.BatchNorm2d(out_channels),
            activation,
        )

    @property
    def conv(self) -> nn.Conv2d:
        return self[1]

    @property
    def norm(self) -> nn.BatchNorm2d:
        return self[2]


class Encoder(nn.Module):
    """Image ``(B, 1, H, W)`` in [0, 1] -> :class:`Features` (f1, f2, base, detail)."""

    def __init__(self, config: DIDFuseConfig = DIDFuseConfig()):
        super().__init__()
        c = config.features
        self.conv1 = ConvLayer(config.in_channels, c, "reflection", nn.PReLU())
        self.conv2 = ConvLayer(c, c, "zero", nn.PReLU())
        self.conv3 = ConvLayer(c, c, "zero", nn.Tanh())
        self.conv4 = ConvLayer(c, c, "zero", nn.Tanh())

    def forward(self, image: Tensor) -> Features:
        f1 = self.conv1(image)
        f2 = self.conv2(f1)
        return Features(f1, f2, self.conv3(f2), self.conv4(f2))


class Decoder(nn.Module):
    """:class:`Features` -> image ``(B, 1, H, W)`` in [0, 1]."""

    def __init__(self, config: DIDFuseConfig = DIDFuseConfig()):
        super().__init__()
        c = config.features
        self.conv5 = ConvLayer(2 * c, c, "zero", nn.PReLU())
        self.conv6 = ConvLayer(2 * c, c, "zero", nn.PReLU())
        self.conv7 = ConvLayer(2 * c, config.in_channels, "reflection", nn.Sigmoid())

    def forward(self, features: Features) -> Tensor:
        f1, f2, base, detail = features
        x = self.conv5(torch.cat((base, detail), dim=1))
        x = self.conv6(torch.cat((x, f2), dim=1))
        return self.conv7(torch.cat((x, f1), dim=1))


class DIDFuse(nn.Module):
    """Encoder + decoder. ``forward`` reconstructs one image (the training path); fusion of two
    images puts a fusion layer between :meth:`encode` and :meth:`decode`."""

    def __init__(self, config: DIDFuseConfig = DIDFuseConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, image: Tensor) -> Features:
        return self.encoder(image)

    def decode(self, features: Features) -> Tensor:
        return self.decoder(features)

    def forward(self, image: Tensor) -> Tensor:
        return self.decoder(self.encoder(image))


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv equal to ``norm(conv(x))`` with BatchNorm in eval mode (running statistics).

    ``y = gamma * (W x + b - mean) / sqrt(var + eps) + beta`` is again a conv with weights
    ``W * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``; computed in
    float64 so folding adds no error of its own.
    """
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    folded = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
    ).to(device=conv.weight.device)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - norm.running_mean.double()) * scale + norm.bias.double())
    return folded


def fold_model(model: DIDFuse) -> DIDFuse:
    """An inference copy of ``model`` with every BatchNorm folded into its conv (eval only)."""
    folded = copy.deepcopy(model).eval()
    for layer in folded.modules():
        if isinstance(layer, ConvLayer):
            layer[1] = fold_batchnorm(layer.conv, layer.norm)
            layer[2] = nn.Identity()
    return folded
