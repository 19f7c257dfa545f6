"""A study, not used by any engine: the encoder's activations and the fusion layer's statistics in
one Triton kernel, inside the compiled CUDA graph.

In the compiled graph each encoder map (f2, base, detail; both cameras) is written by an
activation kernel (conv bias + PReLU or tanh) that also sums ``|x|`` over the channels at each
pixel (the saliency activity), and then read again in full by a separate split reduction that
sums ``|x|`` over each channel's pixels (CAM's pooling): Inductor cannot fuse two reductions over
different axes. The Triton kernel here does the activation and both reductions in one read of
the conv output: per block of pixels it writes the activated map, the per-pixel sums and one
partial per-channel sum, and a tiny second step adds the partials.

On its own it beat Inductor's kernels 1.5-2.2x (``bench/gpu_fused_stats.py``,
bench/results/gpu-h100-fused-stats-s12.json). Inside the whole compiled network it does not pay:
on an H100 at 640x512, batch 32, 44.7 -> 44.2 ms (1.01x; ``bench/gpu_ab.py --set session14``,
bench/results/gpu-h100-ab-s14.json), so the compile engine does not use it.

It is a ``torch.library.triton_op`` (``streamfuse::activation_stats``), so ``torch.compile``
places the kernel inside its graph and CUDA graphs replay it; on the CPU the same op runs the
PyTorch reference. :func:`with_activation_stats` rewrites a FusionNet to use it: conv2, conv3
and conv4 become :class:`ActivationStatsLayer`, and their :class:`~streamfuse.fusion.MapStats`
go to the fusion layer with the maps. conv1 stays as it is (on CUDA its taps, activation and
activity are already one Inductor kernel).

Triton comes with CUDA builds of PyTorch; without it the op has its PyTorch reference only.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamfuse.fuser import FusionNet
from streamfuse.fusion import FusionLayer, MapStats
from streamfuse.model import ConvLayer, Decoder, Encoder, Features

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU builds of PyTorch do not bring Triton
    triton = None

__all__ = ["ActivationStatsLayer", "activation_stats", "launch_activation_stats",
           "reference_activation_stats", "rule_reads_stats", "triton_activation_stats",
           "with_activation_stats"]

OP_NAME = "streamfuse::activation_stats"
# Pixels per Triton program: 64 was fastest of 32/64/128 on an H100 at 640x512, batch 32
# (bench/results/gpu-h100-fused-stats-s12.json).
PIXELS_PER_PROGRAM = 64


def reference_activation_stats(conv: Tensor, bias: Tensor, slope: float,
                               tanh: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(B, C, H, W)`` conv output without its bias -> ``(activated, activity, channel_mean)``.

    ``activated = act(conv + bias)`` in ``conv``'s dtype and channels_last (act: tanh, or PReLU
    with one ``slope``); ``activity`` (B, 1, H, W) and ``channel_mean`` (B, C, 1, 1) are the sums
    of ``|activated|`` (as stored) over the channels and the mean over each channel's pixels, in
    float32 (float64 for float64 maps), as :func:`streamfuse.fusion.map_stats` computes them.
    """
    compute = torch.promote_types(conv.dtype, torch.float32)
    value = conv.to(compute) + bias.to(compute).view(1, -1, 1, 1)
    activated = torch.tanh(value) if tanh else torch.where(value >= 0, value, slope * value)
    activated = activated.to(conv.dtype).contiguous(memory_format=torch.channels_last)
    magnitude = activated.abs().to(compute)
    return activated, magnitude.sum(dim=1, keepdim=True), magnitude.mean(dim=(2, 3), keepdim=True)


if triton is not None:
    @triton.jit
    def _activation_stats_kernel(conv_ptr, bias_ptr, act_ptr, activity_ptr, partial_ptr, pixels,
                                 blocks, slope, CHANNELS: tl.constexpr, BLOCK: tl.constexpr,
                                 TANH: tl.constexpr):
        """One (block of pixels, sample): conv output (B, H*W, C) -> activated map (same layout
        and dtype), per-pixel sum of |map| (B, H*W) fp32, per-channel partial sum (B, blocks, C)."""
        block, sample = tl.program_id(0), tl.program_id(1)
        pixel = block * BLOCK + tl.arange(0, BLOCK)
        channel = tl.arange(0, CHANNELS)
        inside = pixel < pixels
        # int64 offsets: a batch of 1280x1024 maps passes 2**31 elements.
        offsets = (sample * pixels + pixel).to(tl.int64)[:, None] * CHANNELS + channel[None, :]
        value = tl.load(conv_ptr + offsets, mask=inside[:, None], other=0.0).to(tl.float32)
        value += tl.load(bias_ptr + channel).to(tl.float32)[None, :]
        if TANH:
            # tanh(v) = 1 - 2 / (exp(2v) + 1): +-1 at the extremes, no library call.
            activated = 1.0 - 2.0 / (tl.exp(2.0 * value) + 1.0)
        else:
            activated = tl.where(value >= 0, value, slope * value)
        stored = activated.to(act_ptr.dtype.element_ty)
        tl.store(act_ptr + offsets, stored, mask=inside[:, None])
        # The statistics of the map as stored, as the reference computes them.
        magnitude = tl.where(inside[:, None], tl.abs(stored.to(tl.float32)), 0.0)
        tl.store(activity_ptr + sample * pixels + pixel, tl.sum(magnitude, axis=1), mask=inside)
        tl.store(partial_ptr + (sample * blocks + block) * CHANNELS + channel,
                 tl.sum(magnitude, axis=0))


def triton_activation_stats(conv: Tensor, bias: Tensor, slope: float,
                            tanh: bool) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`reference_activation_stats` by the Triton kernel (fp16, bf16 or fp32 maps; the
    channel count a power of two). Runs on CUDA, or on a CPU under ``TRITON_INTERPRET=1``."""
    return launch_activation_stats(conv, bias, slope, tanh)


def launch_activation_stats(conv: Tensor, bias: Tensor, slope: float, tanh: bool,
                            block: int = PIXELS_PER_PROGRAM) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`triton_activation_stats` with ``block`` pixels per Triton program."""
    batch, channels, height, width = conv.shape
    conv = conv.contiguous(memory_format=torch.channels_last)
    pixels = height * width
    blocks = triton.cdiv(pixels, block)
    activated = torch.empty_like(conv, memory_format=torch.channels_last)
    activity = torch.empty(batch, 1, height, width, device=conv.device, dtype=torch.float32)
    partial = torch.empty(batch, blocks, channels, device=conv.device, dtype=torch.float32)
    # wrap_triton lets torch.compile trace the launch. The interpreter's kernels (a CPU check)
    # run eagerly only, and torch before 2.13 refuses to wrap them.
    launch = (_activation_stats_kernel if os.environ.get("TRITON_INTERPRET") == "1"
              else torch.library.wrap_triton(_activation_stats_kernel))
    launch[(blocks, batch)](conv, bias, activated, activity, partial, pixels, blocks, slope,
                            CHANNELS=channels, BLOCK=block, TANH=tanh)
    return activated, activity, (partial.sum(dim=1) / pixels).view(batch, channels, 1, 1)


if triton is not None:
    activation_stats = torch.library.triton_op(OP_NAME, triton_activation_stats, mutates_args=())
    activation_stats.register_kernel("cpu")(reference_activation_stats)
else:
    activation_stats = torch.library.custom_op(OP_NAME, reference_activation_stats, mutates_args=())

    @activation_stats.register_fake
    def _(conv: Tensor, bias: Tensor, slope: float, tanh: bool) -> tuple[Tensor, Tensor, Tensor]:
        batch, channels, height, width = conv.shape
        stats_dtype = torch.promote_types(conv.dtype, torch.float32)
        return (torch.empty_like(conv, memory_format=torch.channels_last),
                conv.new_empty(batch, 1, height, width, dtype=stats_dtype),
                conv.new_empty(batch, channels, 1, 1, dtype=stats_dtype))


class ActivationStatsLayer(nn.Module):
    """A BatchNorm-folded :class:`ConvLayer` with zero padding in its conv and a PReLU (one
    slope) or tanh, returning its map and the map's :class:`MapStats` from one kernel."""

    def __init__(self, layer: ConvLayer):
        super().__init__()
        pad, conv, norm, activation = layer
        if not (isinstance(pad, nn.Identity) and isinstance(norm, nn.Identity)):
            raise ValueError("ActivationStatsLayer: fold BatchNorm and the zero padding first")
        if isinstance(activation, nn.PReLU) and activation.weight.numel() == 1:
            self.slope, self.tanh = float(activation.weight.detach()), False
        elif isinstance(activation, nn.Tanh):
            self.slope, self.tanh = 0.0, True
        else:
            raise ValueError(f"ActivationStatsLayer: no kernel for {activation}")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().float().clone(), requires_grad=False)
        self.padding = conv.padding

    def forward(self, x: Tensor) -> tuple[Tensor, MapStats]:
        conv = F.conv2d(x, self.weight, None, padding=self.padding)
        activated, activity, channel_mean = activation_stats(conv, self.bias, self.slope, self.tanh)
        return activated, MapStats(activity, channel_mean)


class EncoderWithStats(nn.Module):
    """An :class:`Encoder` whose f2, base and detail come with their :class:`MapStats`."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.conv1 = encoder.conv1
        self.conv2, self.conv3, self.conv4 = (
            ActivationStatsLayer(layer) for layer in (encoder.conv2, encoder.conv3, encoder.conv4))

    def forward(self, image: Tensor) -> tuple[Features, tuple[MapStats | None, ...]]:
        f1 = self.conv1(image)
        f2, f2_stats = self.conv2(f1)
        base, base_stats = self.conv3(f2)
        detail, detail_stats = self.conv4(f2)
        return Features(f1, f2, base, detail), (None, f2_stats, base_stats, detail_stats)


class FusionNetWithStats(nn.Module):
    """:class:`FusionNet` with :class:`EncoderWithStats`: the same function."""

    def __init__(self, net: FusionNet):
        super().__init__()
        self.encoder = EncoderWithStats(net.encoder)
        self.fusion: FusionLayer = net.fusion
        self.decoder: Decoder = net.decoder

    def forward(self, ir: Tensor, vis: Tensor) -> Tensor:
        ir_features, ir_stats = self.encoder(ir)
        vis_features, vis_stats = self.encoder(vis)
        return self.decoder(Features(*self.fusion(ir_features, vis_features, ir_stats, vis_stats)))


def rule_reads_stats(rule: str) -> bool:
    """Whether a fusion rule reads activities or channel means (all but sum/average/weighted)."""
    spatial, _, cam = rule.partition("+")
    return spatial in ("l1", "saliency", "cam") or bool(cam)


def with_activation_stats(net: FusionNet) -> FusionNetWithStats:
    """``net`` (BatchNorm and zero padding folded) with conv2-conv4 as :class:`ActivationStatsLayer`;
    shares ``net``'s modules."""
    channels = net.encoder.conv2.conv.out_channels
    if channels & (channels - 1):
        raise ValueError(f"with_activation_stats: {channels} channels is not a power of two")
    return FusionNetWithStats(net)
