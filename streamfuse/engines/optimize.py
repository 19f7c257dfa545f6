"""Inference rewrites of a FusionNet shared by the engines (on top of BatchNorm folding).

Each rewrite computes the same function (up to float summation order); they exist because graph
compilers map the rewritten form onto faster kernels:

- :func:`fold_zero_padding`: the conv reads its zero border itself instead of a padded copy.
- :func:`prelu_as_leaky_relu`: a one-slope PReLU is LeakyReLU with that slope as a constant,
  which OpenVINO and TensorRT fuse into the preceding convolution; ``torch.export`` turns a PReLU
  module into a separate full-size select.
- :func:`pad_input_channels`: conv1 reads its 1-channel image padded with zero channels to 8;
  with 1 channel cuDNN falls back to a generic fp16 kernel (bench/gpu_profile.py on an H200,
  batch of 32 at 640x512: conv1 3.7 ms -> 2.9 ms for both cameras).
- :class:`TapSumLayer`: conv1, with one input channel, as the sum of its nine shifted inputs
  times per-channel weights: Inductor writes it, with its activation, as one pointwise kernel
  instead of a cuDNN call at a few % of the tensor cores' rate plus a pass for the activation.
  Not used by an engine yet (see :class:`~streamfuse.engines.torch_engines.CompiledFuser`);
  ``bench/gpu_ab.py`` measures it.
- :class:`TapPlanesLayer` (the eager CUDA engine): conv7, with one output channel, as a 1x1 convolution to its
  nine tap planes (a plain GEMM reading the 128-channel input once) and a shifted sum of those
  planes; the 128-channel reflection-padded copy is never written.
- :class:`ConcatFreeDecoder`: ``conv(cat(a, b))`` as ``conv_a(a) + conv_b(b)``, so the decoder's
  skip connections are never copied into a 128-channel buffer (OpenVINO's concat is a plain copy;
  the sum is fused into the second convolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamfuse.model import ConvLayer, Decoder, Features


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


class ZeroChannelPad(nn.Module):
    """``(B, C, H, W)`` -> ``(B, channels, H, W)``: the input followed by zero channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))
        return padded.contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def pad_input_channels(net: nn.Module, multiple: int = 8) -> nn.Module:
    """Gives each conv of ``net``'s conv layers whose input channel count is not a multiple of
    ``multiple`` zero weights for extra zero input channels (:class:`ZeroChannelPad`, before the
    layer's padding), in place; returns ``net``. The added products are exact zeros.

    Only inputs: cuDNN's kernel for conv7's single output channel was as slow with 8 (zero)
    output channels (2.8 ms per batch of 32 at 640x512 on an H200, both ways).
    """
    for layer in net.modules():
        if not isinstance(layer, ConvLayer) or layer.conv.in_channels % multiple == 0:
            continue
        conv = layer.conv
        in_channels = -(-conv.in_channels // multiple) * multiple
        wide = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         bias=conv.bias is not None).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : conv.in_channels] = conv.weight
            if conv.bias is not None:
                wide.bias.copy_(conv.bias)
        layer[0] = nn.Sequential(ZeroChannelPad(in_channels), layer[0])
        layer[1] = wide
    return net


def _autocast_like_conv(x: Tensor) -> Tensor:
    """``x`` in the dtype a convolution would return under the active autocast (if any)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def _plain_layer_parts(layer: ConvLayer, rewrite: str) -> tuple[nn.Module, nn.Conv2d, nn.Module, nn.Module]:
    """``(padding, conv, norm, activation)`` of a layer with a plain conv (stride, dilation and
    groups 1); ``padding`` is the layer's padding module followed by the conv's own zero padding,
    so the conv's padding is accounted for."""
    pad, conv, norm, activation = layer
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
        raise ValueError(f"{rewrite}: stride, dilation and groups must be 1")
    rows, columns = conv.padding
    if (rows, columns) != (0, 0):
        pad = nn.Sequential(pad, nn.ZeroPad2d((columns, columns, rows, rows)))
    return pad, conv, norm, activation


class TapSumLayer(nn.Module):
    """A :class:`ConvLayer` with few input channels, written as ``bias + sum_t w_t * x_t`` over its
    ``C * kh * kw`` taps ``x_t`` (shifted views of the padded input) with per-output-channel
    weights ``w_t``, accumulated in float32 and returned in the dtype the conv would have had.

    The same function as the layer (float32 summation order aside); under ``torch.compile`` it is
    one pointwise kernel, fused with the layer's activation, that reads the small input and
    writes the output once.
    """

    def __init__(self, layer: ConvLayer):
        super().__init__()
        self.pad, conv, self.norm, self.activation = _plain_layer_parts(layer, "TapSumLayer")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias.clone().to(conv.weight), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out, H', W') as the layer, channels_last."""
        padded = self.pad(x).float()
        _, channels, rows, columns = self.weight.shape
        height, width = padded.shape[2] - rows + 1, padded.shape[3] - columns + 1
        weight = self.weight.float()
        summed = self.bias.float().view(1, -1, 1, 1)
        for c in range(channels):
            for dy in range(rows):
                for dx in range(columns):
                    tap = padded[:, c : c + 1, dy : dy + height, dx : dx + width]
                    summed = summed + weight[:, c, dy, dx].view(1, -1, 1, 1) * tap
        summed = _autocast_like_conv(summed).contiguous(memory_format=torch.channels_last)
        return self.activation(self.norm(summed))


class TapPlanesLayer(nn.Module):
    """A :class:`ConvLayer` with few output channels, written as a 1x1 convolution from its
    input to one plane per (output channel, tap), padded like the layer's input, and a sum of
    those planes shifted by their taps, plus the bias.

    A 1x1 convolution commutes with any per-channel spatial padding, so padding the planes equals
    padding the input: the same function (summation order aside), with the wide input read once
    by a GEMM and only the few tap planes padded and shifted. The plane count is rounded up to a
    multiple of 8 with zero weights (cuDNN's fp16 kernels want that); the sum reads the real ones.
    """

    def __init__(self, layer: ConvLayer):
        super().__init__()
        self.pad, conv, self.norm, self.activation = _plain_layer_parts(layer, "TapPlanesLayer")
        out_channels, in_channels, rows, columns = conv.weight.shape
        self.out_channels, self.kernel_size = out_channels, (rows, columns)
        planes = out_channels * rows * columns
        self.planes = nn.Conv2d(in_channels, -(-planes // 8) * 8, 1, bias=False)
        self.planes = self.planes.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.planes.weight.zero_()
            # Plane (o, dy, dx) holds sum_c w[o, c, dy, dx] * x_c.
            taps = conv.weight.detach().permute(0, 2, 3, 1).reshape(planes, in_channels, 1, 1)
            self.planes.weight[:planes] = taps
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_channels)
        self.bias = nn.Parameter(bias.clone().to(conv.weight), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out, H', W') as the layer."""
        rows, columns = self.kernel_size
        taps = rows * columns
        planes = self.pad(self.planes(x)[:, : self.out_channels * taps]).float()
        height, width = planes.shape[2] - rows + 1, planes.shape[3] - columns + 1
        outputs = []
        for o in range(self.out_channels):
            summed = self.bias[o].float()
            for dy in range(rows):
                for dx in range(columns):
                    plane = o * taps + dy * columns + dx
                    summed = summed + planes[:, plane : plane + 1, dy : dy + height, dx : dx + width]
            outputs.append(summed)
        summed = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return self.activation(self.norm(summed))


def _replace_layers(net: nn.Module, wanted, build) -> nn.Module:
    """Replaces each ConvLayer child ``layer`` of ``net`` with ``wanted(layer)`` by
    ``build(layer)``, in place; returns ``net``."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvLayer) and wanted(child):
                setattr(parent, name, build(child))
    return net


def taps_for_narrow_convs(net: nn.Module, max_taps: int = 16) -> nn.Module:
    """The CUDA rewrites of layers whose input or output side has at most ``max_taps`` taps
    (channels x kernel positions): :class:`TapSumLayer` for a narrow input (conv1),
    :class:`TapPlanesLayer` for a narrow output (conv7). In place; returns ``net``.

    Run it after BatchNorm folding and :func:`fold_zero_padding`. TapSumLayer is meant for
    compiled graphs; in eager mode its taps are separate full-size passes (see
    :func:`taps_for_narrow_outputs` for eager).
    """
    def taps(channels: int, conv: nn.Conv2d) -> int:
        return channels * conv.kernel_size[0] * conv.kernel_size[1]

    _replace_layers(net, lambda layer: taps(layer.conv.in_channels, layer.conv) <= max_taps, TapSumLayer)
    return taps_for_narrow_outputs(net, max_taps)


def taps_for_narrow_outputs(net: nn.Module, max_taps: int = 16) -> nn.Module:
    """:class:`TapPlanesLayer` for each layer with at most ``max_taps`` output taps; in place."""
    def narrow(layer: ConvLayer) -> bool:
        conv = layer.conv
        return conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] <= max_taps
    return _replace_layers(net, narrow, TapPlanesLayer)


class LeakyReLU(nn.Module):
    """``max(x, 0) + slope * min(x, 0)`` with a fixed Python-float slope (exported as a constant)."""

    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.slope)

    def extra_repr(self) -> str:
        return f"slope={self.slope}"


def prelu_as_leaky_relu(net: nn.Module) -> nn.Module:
    """Replaces every single-parameter PReLU of ``net``'s conv layers by :class:`LeakyReLU`, in place.

    PReLU with one learned slope ``a`` is ``x if x >= 0 else a * x``, i.e. LeakyReLU(a): exact in
    float32. Frozen inference only (the slope stops being a parameter). Returns ``net``.
    """
    for layer in net.modules():
        if isinstance(layer, ConvLayer) and isinstance(layer[3], nn.PReLU) and layer[3].num_parameters == 1:
            layer[3] = LeakyReLU(float(layer[3].weight.detach().float().item()))
    return net


class SplitInputLayer(nn.Module):
    """A :class:`ConvLayer` over ``cat(a, b)`` computed as ``act(norm(conv_a(pad a) + conv_b(pad b)))``.

    The input channels of the 3x3 convolution split into the part that reads ``a`` (with the bias)
    and the part that reads ``b``; padding acts per channel, so padding each part is the same as
    padding their concatenation.
    """

    def __init__(self, layer: ConvLayer, first_channels: int):
        super().__init__()
        pad, conv, norm, activation = layer
        self.pad, self.norm, self.activation = pad, norm, activation
        self.conv_first = self._part(conv, slice(0, first_channels), bias=True)
        self.conv_second = self._part(conv, slice(first_channels, conv.in_channels), bias=False)

    @staticmethod
    def _part(conv: nn.Conv2d, channels: slice, bias: bool) -> nn.Conv2d:
        weight = conv.weight.detach()[:, channels]
        part = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, bias=bias and conv.bias is not None)
        part = part.to(device=weight.device, dtype=weight.dtype)
        part.weight.data.copy_(weight)
        if part.bias is not None:
            part.bias.data.copy_(conv.bias.detach())
        return part

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        """``first`` (B, C1, H, W), ``second`` (B, C - C1, H, W) -> (B, out, H, W)."""
        summed = self.conv_first(self.pad(first)) + self.conv_second(self.pad(second))
        return self.activation(self.norm(summed))


class ConcatFreeDecoder(nn.Module):
    """:class:`streamfuse.model.Decoder` without its three channel concatenations (same function)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        features = decoder.conv5.conv.in_channels // 2
        self.conv5 = SplitInputLayer(decoder.conv5, features)
        self.conv6 = SplitInputLayer(decoder.conv6, features)
        self.conv7 = SplitInputLayer(decoder.conv7, features)

    def forward(self, features: Features) -> Tensor:
        f1, f2, base, detail = features
        x = self.conv5(base, detail)
        x = self.conv6(x, f2)
        return self.conv7(x, f1)


def rewrite_for_graph_compiler(net: nn.Module) -> nn.Module:
    """All rewrites above on a FusionNet (BatchNorm already folded), in place; returns ``net``."""
    fold_zero_padding(net)
    prelu_as_leaky_relu(net)
    net.decoder = ConcatFreeDecoder(net.decoder)
    return net
