"""Exact inference rewrites of a FusionNet shared by every engine (on top of BatchNorm folding)."""

from __future__ import annotations

from torch import nn

from streamfuse.model import ConvLayer


def fold_zero_padding(net: nn.Module) -> nn.Module:
    """Moves each ``ZeroPad2d(1)`` of ``net``'s conv layers into its conv (``padding=1``), in place.

    Same result, but the conv reads its border from the unpadded map instead of a padded copy
    that eager PyTorch and OpenVINO would otherwise write for every layer. Reflection padding
    stays a separate module (convs only pad with zeros here). Returns ``net``.
    """
    for layer in net.modules():
        if isinstance(layer, ConvLayer) and isinstance(layer[0], nn.ZeroPad2d):
            if tuple(layer[0].padding) != (1, 1, 1, 1) or tuple(layer.conv.padding) != (0, 0):
                continue
            layer.conv.padding = (1, 1)
            layer[0] = nn.Identity()
    return net
