"""Box and guided filters on batched tensors, on whatever device the input lives on.

Both are built from separable window sums (average pooling, or on the CPU a depthwise
convolution with ones), so they run unchanged under ``torch.compile``, ONNX export and any
device; they never leave the tensor world (no NumPy/OpenCV).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["box_filter", "guided_filter"]


def box_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window around each pixel, restricted to the image.

    Near the border the window is cut to the part inside the image and the sum is divided by
    that part's pixel count, as in He et al.'s guided-filter reference (``boxfilter / N``).

    The filter is two 1-D window means, each a direct sum over at most 2r+1 values divided by
    that axis's in-image count: the in-image part of the window is a rectangle, so dividing
    each axis by its own count equals dividing by the rectangle's area. Direct sums keep
    float32 precision on large frames, where a 2-D cumulative-sum (integral image) box filter
    loses digits to the growing running sums. The sums are average poolings with
    ``count_include_pad=False``, except for float32 on the CPU outside ``torch.export``: there
    they are depthwise convolutions with a row and a column of ones, which oneDNN runs 1.7-3.6x
    faster than PyTorch's CPU pooling at the fusion layer's shapes (the same sums in the same
    order; ``bench/box_filter_cpu.py``). Exported graphs keep the pooling their compilers know.

    Args:
        x: (B, C, H, W) floating tensor.
        radius: window radius r >= 0; r = 0 returns ``x`` unchanged.

    Returns:
        (B, C, H, W) tensor, same dtype and device as ``x``.
    """
    if radius < 0:
        raise ValueError(f"box_filter radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    size = 2 * radius + 1
    if x.shape[1] > 1 and x.device.type == "cpu" and not torch.compiler.is_compiling():
        # Eager PyTorch on a CPU pools channels_last maps about 3x faster than contiguous ones
        # (it vectorises over the channels), and convolves them depthwise 1.7-15x faster;
        # compiled graphs pick their own layouts. On CUDA the channels_last pooling was the
        # eager path's costliest kernel (bench/gpu_profile.py).
        x = x.contiguous(memory_format=torch.channels_last)
    if _sums_by_convolution(x):
        return _box_filter_by_convolution(x, radius)
    along_width = F.avg_pool2d(
        x, (1, size), stride=1, padding=(0, radius), count_include_pad=False
    )
    return F.avg_pool2d(
        along_width, (size, 1), stride=1, padding=(radius, 0), count_include_pad=False
    )


def _sums_by_convolution(x: torch.Tensor) -> bool:
    """Whether :func:`box_filter` sums ``x``'s windows with depthwise convolutions."""
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.compiler.is_exporting())


def _in_image_counts(length: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """(length,) how many of the 2r+1 taps around each position along an axis are in the image."""
    position = torch.arange(length, device=like.device)
    last = (position + radius).clamp(max=length - 1)
    first = (position - radius).clamp(min=0)
    return (last - first + 1).to(like.dtype)


def _box_filter_by_convolution(x: torch.Tensor, radius: int) -> torch.Tensor:
    """:func:`box_filter` as two depthwise convolutions with ones (zero padding adds nothing to
    a sum), each divided in place by its axis's in-image counts (a fresh map is memory the
    kernel faults in again). (B, C, H, W) -> (B, C, H, W).

    Autocast is switched off around them: it would run the convolutions, unlike the pooling,
    in half precision."""
    channels, height, width = x.shape[1:]
    ones_row = x.new_ones(channels, 1, 1, 2 * radius + 1)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, enabled=False):
        along_width = F.conv2d(x, ones_row, padding=(0, radius), groups=channels)
        along_width.div_(_in_image_counts(width, radius, x))
        window_sums = F.conv2d(along_width, ones_row.transpose(2, 3), padding=(radius, 0),
                               groups=channels)
    return window_sums.div_(_in_image_counts(height, radius, x)[:, None])


def guided_filter(
    guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """Gray-guide guided filter (He, Sun, Tang, TPAMI 2013, Algorithm 1).

    Every window is fitted with the local linear model ``q = a * guide + b`` (least squares with
    ridge ``eps`` on ``a``), and the output averages the models of all windows covering a pixel.
    ``eps`` is in the guide's squared units: edges whose guide variance is well above ``eps`` are
    kept, flatter regions are smoothed like a box filter.

    Args:
        guide: (B, 1, H, W) gray guide, or (B, C, H, W) for one gray guide per channel.
        src: (B, C, H, W) input to filter; the guide broadcasts over its channels.
        radius: window radius r >= 0 (window (2r+1)x(2r+1), cut at the image border).
        eps: regularisation > 0.

    Returns:
        (B, C, H, W) filtered ``src``.
    """
    # The four window means come from one box filter over the maps stacked as channels (and the
    # two model means from another): fewer, wider passes, which blocked-channel layouts (oneDNN,
    # OpenVINO) pad to 8 or 16 channels anyway.
    guide_channels, src_channels = guide.shape[1], src.shape[1]
    mean_guide, mean_src, mean_guide_sq, mean_guide_src = box_filter(
        torch.cat([guide, src, guide * guide, guide * src], dim=1), radius
    ).split([guide_channels, src_channels, guide_channels, src_channels], dim=1)
    # Rounding can push a flat window's variance a hair below zero; it is >= 0 by definition.
    var_guide = (mean_guide_sq - mean_guide * mean_guide).clamp_min(0)
    cov_guide_src = mean_guide_src - mean_guide * mean_src
    slope = cov_guide_src / (var_guide + eps)
    offset = mean_src - slope * mean_guide
    mean_slope, mean_offset = box_filter(torch.cat([slope, offset], dim=1), radius).split(
        [src_channels, src_channels], dim=1
    )
    return mean_slope * guide + mean_offset
