"""DIDFuse fusion layer (paper Sec. III-D, eq. 6-17): merges IR and visible encoder maps pairwise.

Each of the four encoder outputs (f1, f2, base B, detail D), all (B, 64, H, W), is fused with
its counterpart from the other camera by a configurable rule:

- ``sum``: ``ir + vis``, what the authors' public (IJCAI 2020) code does; reproduces its results.
- ``average``, ``weighted`` (eq. 13): fixed weights 0.5/0.5 and gamma/(1 - gamma).
- ``l1`` (eq. 7-8) and ``saliency`` (eq. 9-12): spatial attention, one weight per pixel.
- ``cam`` (eq. 14-16): channel attention, one weight per channel.
- ``average+cam``, ``weighted+cam``, ``l1+cam``, ``saliency+cam``: eq. 17, ``0.5 * (SAM + CAM)``.

Weights are computed in float32 (float64 for float64 input) whatever the input dtype, so fp16/
bf16 maps and autocast do not degrade the histogram, guided filter or divisions; the maps are
then mixed in the input's dtype. There is no ``.item()``, no data-dependent Python branch and no
NumPy/OpenCV on this path, so it runs batched on any device and under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from .errors import StreamFuseError
from .filters import box_filter, guided_filter

__all__ = [
    "MAP_NAMES",
    "RULES",
    "FusionConfig",
    "FusionLayer",
    "MapStats",
    "cam_weights",
    "cam_weights_from_means",
    "fuse_maps",
    "l1_activity",
    "l1_weights",
    "l1_weights_from_activity",
    "map_stats",
    "quantize_activity",
    "saliency_map",
    "saliency_weights",
    "saliency_weights_from_activity",
    "spatial_ir_weights",
]

MAP_NAMES = ("f1", "f2", "base", "detail")
RULES = (
    "sum",
    "average",
    "weighted",
    "l1",
    "saliency",
    "cam",
    "average+cam",
    "weighted+cam",
    "l1+cam",
    "saliency+cam",
)
SALIENCY_LEVELS = 256
# Activity spans below this fraction of the peak are float noise, not structure: see
# quantize_activity.
ACTIVITY_NOISE_FLOOR = 1e-3
# On CUDA each plane's histogram is counted in this many pixel tiles, then summed: the atomic
# adds of all threads onto one plane's 256 bins would otherwise queue on a few addresses
# (bench/gpu_profile.py: 4.9 ms of a 55 ms batch of 32 at 640x512 on an H200 with one tile).
CUDA_HISTOGRAM_TILES = 64
# Eq. 7's psi is a 3x3 box blur.
L1_SMOOTHING_RADIUS = 1


@dataclass(frozen=True)
class FusionConfig:
    """How the fusion layer merges each IR/visible map pair.

    Attributes:
        rule: one of ``RULES``; the paper's choice (Table III) is ``saliency+cam``.
        gamma: IR weight of the ``weighted`` rule (eq. 13); visible gets ``1 - gamma``.
        guided_radius: radius of the guided filter refining saliency weights (eq. 11). The
            paper gives none. 7 (a 15x15 window, about 2 % of a 640-pixel-wide frame, as
            DIDFuse keeps full resolution) is wide enough to even out the pixel-level speckle
            of the raw saliency ratio yet narrow enough to keep object-sized weight changes.
            The sweep on held-out frames (models/README.md) moves every metric by < 1.5%.
        guided_eps: guided-filter regularisation, in squared units of the guide, which is the
            activity map scaled to [0, 1]. 1e-2 means windows whose guide standard deviation is
            well above 0.1 (about 25 of 255 levels) keep weight edges aligned with activity
            edges, while flatter windows are simply averaged. Checked with the same sweep.
        eps: added to every ratio's numerator (once) and denominator (twice), so that two zero
            activities give 0.5/0.5 instead of NaN; negligible against real activities.
        apply_to: which of ``MAP_NAMES`` the rule is applied to; the others are fused with
            ``sum`` (the authors' public behaviour). Default: all four.
    """

    rule: str = "saliency+cam"
    gamma: float = 0.5
    guided_radius: int = 7
    guided_eps: float = 1e-2
    eps: float = 1e-6
    apply_to: tuple[str, ...] = MAP_NAMES

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise StreamFuseError(
                f"unknown fusion rule {self.rule!r} (--rule / inference.fusion); use one of {', '.join(RULES)}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise StreamFuseError(f"FusionConfig.gamma: {self.gamma} is outside [0, 1]")
        if isinstance(self.guided_radius, bool) or not isinstance(self.guided_radius, int) or (
            self.guided_radius < 0
        ):
            raise StreamFuseError(
                f"FusionConfig.guided_radius: {self.guided_radius!r} must be an integer >= 0"
            )
        if not self.guided_eps > 0:
            raise StreamFuseError(f"FusionConfig.guided_eps: {self.guided_eps} must be > 0")
        if not self.eps > 0:
            raise StreamFuseError(f"FusionConfig.eps: {self.eps} must be > 0")
        if isinstance(self.apply_to, str):
            raise StreamFuseError(
                f"FusionConfig.apply_to: {self.apply_to!r} must be a list of map names, "
                f"e.g. ['base', 'detail'], from {', '.join(MAP_NAMES)}"
            )
        apply_to = tuple(self.apply_to)
        unknown = [name for name in apply_to if name not in MAP_NAMES]
        if unknown:
            raise StreamFuseError(
                f"FusionConfig.apply_to: unknown map name(s) {', '.join(map(repr, unknown))}; "
                f"use names from {', '.join(MAP_NAMES)}"
            )
        object.__setattr__(self, "apply_to", apply_to)


class MapStats(NamedTuple):
    """What the fusion rules read of one (B, C, H, W) feature map besides the map itself.

    A network whose kernel writing the map also sums it hands these to :class:`FusionLayer`,
    which then does not read the map again for them (bench/activation_stats.py, a GPU study).
    :func:`map_stats` is the reference.

    Attributes:
        activity: (B, 1, H, W) ``l1_activity`` of the map (weight dtype).
        channel_mean: (B, C, 1, 1) mean of ``|x|`` over each channel's pixels (weight dtype), CAM's
            global pooling.
    """

    activity: torch.Tensor
    channel_mean: torch.Tensor


def _weight_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision maps, float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _share(own: torch.Tensor, other: torch.Tensor, eps: float) -> torch.Tensor:
    """``own / (own + other)`` for non-negative inputs, guarded: 0.5 where both are 0.

    ``(own + eps) / (own + other + 2 eps)`` stays in [0, 1] under float rounding too, since the
    numerator can never round above the denominator.
    """
    return (own + eps) / (own + other + 2 * eps)


def _eager_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a channels_last map seen by eager PyTorch (not a compiler or exporter)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()


def _l1_norm(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``sum |x|`` over ``dim`` (kept), accumulated in the weight dtype, so 64 half-precision
    channels cannot overflow.

    ``vector_norm`` is one fused pass (ReduceL1 in exported graphs); eager PyTorch runs it over a
    channels_last map 2.5-4x slower than ``abs().sum()``, which writes ``|x|`` first but is
    vectorised, so eager channels_last maps take that road.
    """
    if _eager_channels_last(x):
        return x.abs().sum(dim=dim, keepdim=True, dtype=_weight_dtype(x))
    return torch.linalg.vector_norm(x, 1, dim=dim, keepdim=True, dtype=_weight_dtype(x))


def l1_activity(x: torch.Tensor) -> torch.Tensor:
    """Channel-wise l1 norm at every pixel, ``sum_c |x_c(y, x)|``.

    Args:
        x: (B, C, H, W) feature map.

    Returns:
        (B, 1, H, W) activity, float32 (float64 for float64 input).
    """
    return _l1_norm(x, 1)


def l1_weights_from_activity(
    activity_ir: torch.Tensor, activity_vis: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """IR weight of l1 attention (eq. 7) from activity maps, one plane per fused map.

    Args:
        activity_ir, activity_vis: (B, K, H, W) ``l1_activity`` of K maps per camera, stacked
            as channels (each plane is handled on its own).
        eps: division guard.

    Returns:
        (B, K, H, W) ``w_ir`` in [0, 1]; ``w_vis = 1 - w_ir``.
    """
    smoothed = box_filter(torch.cat([activity_ir, activity_vis]), L1_SMOOTHING_RADIUS)
    smoothed_ir, smoothed_vis = smoothed.split(activity_ir.shape[0])
    return _share(smoothed_ir, smoothed_vis, eps)


def l1_weights(
    ir: torch.Tensor, vis: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """l1-attention weights (eq. 7): share of the 3x3-box-blurred l1 activity.

    ``w_ir = (a_ir + eps) / (a_ir + a_vis + 2 eps)`` with ``a = box3(l1_activity(x))`` (the box
    is cut at the image border), ``w_vis = 1 - w_ir``; zero activity on both gives 0.5/0.5.

    Args:
        ir, vis: (B, C, H, W) feature maps of the two cameras.
        eps: division guard.

    Returns:
        ``(w_ir, w_vis)``, each (B, 1, H, W), in [0, 1], summing to 1.
    """
    weight_ir = l1_weights_from_activity(l1_activity(ir), l1_activity(vis), eps)
    return weight_ir, 1 - weight_ir


def quantize_activity(activity: torch.Tensor) -> torch.Tensor:
    """Integer levels 0..255 of activity maps, min-max scaled per plane.

    ``round((a - min) / span * 255)`` with ``span = max(max - min, 1e-3 * max, tiny)``, computed
    in ``activity``'s dtype (rounding half to even), min and max taken over each (H, W) plane.
    The floor keeps float rounding from being stretched to full scale: the channel sum of an
    exactly constant map differs by an ulp between pixels (vectorised and scalar summation
    paths), and a bare min-max would turn that into levels 0 and 255. Variations under 0.1 % of
    the peak activity are therefore not stretched (they get proportionally fewer levels), and a
    constant or all-zero map gives all zeros, without a branch.

    Args:
        activity: (B, K, H, W) non-negative maps, e.g. ``l1_activity(x)`` (K = 1) or the
            activities of K feature maps stacked as channels.

    Returns:
        (B, K, H, W) int64 levels in [0, 255].
    """
    flat = activity.flatten(2)
    low = flat.amin(dim=2)[..., None, None]
    high = flat.amax(dim=2)[..., None, None]
    noise_floor = (ACTIVITY_NOISE_FLOOR * high).clamp_min(torch.finfo(activity.dtype).tiny)
    span = torch.maximum(high - low, noise_floor)
    scaled = (activity - low) / span * (SALIENCY_LEVELS - 1)
    return scaled.round().clamp(0, SALIENCY_LEVELS - 1).to(torch.int64)


def saliency_map(
    levels: torch.Tensor, dtype: torch.dtype = torch.float32, tiles: int | None = None
) -> torch.Tensor:
    """Histogram-contrast saliency (eq. 9): ``S(p) = sum_k H(k) |m(p) - k|``, per plane.

    ``H`` is each plane's 256-bin histogram as probabilities (a batched ``scatter_add``; float32
    counts are exact up to 2**24 pixels per plane, 25x a 640x512 frame). With ``tiles`` > 1 each
    run of ``pixels / tiles`` pixels counts into a histogram of its own and the tiles' counts are
    summed: the same integers, with fewer threads adding onto one address (default
    ``CUDA_HISTOGRAM_TILES`` on CUDA, 1 elsewhere). The
    sum over k depends on ``m(p)`` only, so it is a 256-entry lookup table ``LUT = H @ D`` with
    ``D[k, q] = |q - k|``, read back with ``gather``. The product is written as a broadcast
    multiply-sum (65k terms per plane) rather than ``matmul``, which autocast would run in
    half precision.

    Args:
        levels: (B, K, H, W) int64 levels in [0, 255], from ``quantize_activity``.
        dtype: floating dtype of the result.
        tiles: pixel tiles per plane for counting; None picks by device.

    Returns:
        (B, K, H, W) saliency in [0, 255]; a constant plane has saliency 0.
    """
    if tiles is None:
        tiles = CUDA_HISTOGRAM_TILES if levels.device.type == "cuda" else 1
    flat_levels = levels.flatten(2).flatten(0, 1)
    planes, pixels = flat_levels.shape
    bins = flat_levels
    if tiles > 1:
        tile = torch.arange(pixels, device=levels.device) * tiles // pixels
        bins = flat_levels + tile * SALIENCY_LEVELS
    counts = torch.zeros(planes, tiles * SALIENCY_LEVELS, dtype=dtype, device=levels.device)
    counts = counts.scatter_add_(1, bins, torch.ones_like(bins, dtype=dtype))
    if tiles > 1:
        counts = counts.view(planes, tiles, SALIENCY_LEVELS).sum(dim=1)
    histogram = counts / pixels
    grey = torch.arange(SALIENCY_LEVELS, dtype=dtype, device=levels.device)
    distance = (grey.unsqueeze(1) - grey.unsqueeze(0)).abs()
    lookup = (histogram.unsqueeze(2) * distance).sum(dim=1)
    return lookup.gather(1, flat_levels).view(levels.shape)


def saliency_weights_from_activity(
    activity_ir: torch.Tensor,
    activity_vis: torch.Tensor,
    radius: int,
    eps: float,
    div_eps: float = 1e-6,
) -> torch.Tensor:
    """IR weight of saliency attention (eq. 9-11) from activity maps, one plane per fused map.

    The fusion layer stacks the activities of all its maps as channels, so the histograms, the
    guided filter and the divisions run once for all of them, on planes as wide as the vector
    registers and channel blocks of the CPU kernels (a 1-channel plane would be padded to 16).

    Args:
        activity_ir, activity_vis: (B, K, H, W) ``l1_activity`` of K maps per camera.
        radius, eps: guided-filter radius and regularisation (guide in [0, 1]).
        div_eps: division guard.

    Returns:
        (B, K, H, W) ``w_ir`` in [0, 1]; ``w_vis = 1 - w_ir``. See :func:`saliency_weights`.
    """
    batch = activity_ir.shape[0]
    # Both cameras go through every step as one batch of 2B samples.
    activity = torch.cat([activity_ir, activity_vis])
    levels = quantize_activity(activity)
    saliency_ir, saliency_vis = saliency_map(levels, activity.dtype).split(batch)
    raw_ir = _share(saliency_ir, saliency_vis, div_eps)
    raw = torch.cat([raw_ir, 1 - raw_ir])
    guide = levels.to(activity.dtype) / (SALIENCY_LEVELS - 1)
    refined_ir, refined_vis = guided_filter(guide, raw, radius, eps).clamp_min(0).split(batch)
    return _share(refined_ir, refined_vis, div_eps)


def saliency_weights(
    ir: torch.Tensor,
    vis: torch.Tensor,
    radius: int,
    eps: float,
    div_eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency-attention weights (eq. 9-11).

    The paper does not say how a 64-channel map becomes the 8-bit image of eq. 9. Here
    ``m = quantize_activity(l1_activity(x))``: the unsmoothed per-pixel l1 norm (the guided
    filter does the smoothing), min-max scaled per sample to integer levels 0..255.

    1. ``S = saliency_map(m)`` for each camera (eq. 9).
    2. ``w~_ir = (S_ir + div_eps) / (S_ir + S_vis + 2 div_eps)``, ``w~_vis = 1 - w~_ir`` (eq. 10).
    3. Eq. 11: ``w~_ir`` is guided-filtered with guide ``m_ir / 255`` and ``w~_vis`` with
       ``m_vis / 255``. The paper guides by the 64-channel map itself; a guided filter with a
       C-channel guide solves a CxC system per pixel (64x64 here), far too costly for real
       time, so the gray activity map stands in for it. The filtered maps can overshoot below
       0, so they are clamped at 0 before the renormalisation ``w_ir = r_ir / (r_ir + r_vis)``
       (guarded like step 2), which keeps weights in [0, 1] summing to 1.

    Args:
        ir, vis: (B, C, H, W) feature maps of the two cameras.
        radius: guided-filter radius.
        eps: guided-filter regularisation (guide in [0, 1]).
        div_eps: division guard.

    Returns:
        ``(w_ir, w_vis)``, each (B, 1, H, W), in [0, 1], summing to 1.
    """
    weight_ir = saliency_weights_from_activity(
        l1_activity(ir), l1_activity(vis), radius, eps, div_eps
    )
    return weight_ir, 1 - weight_ir


def _mean_magnitude(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1) mean of |x| per channel, in the weight dtype."""
    return _l1_norm(x, (2, 3)) / (x.shape[2] * x.shape[3])


def map_stats(x: torch.Tensor, scratch: torch.Tensor | None = None) -> MapStats:
    """(B, C, H, W) map -> its :class:`MapStats`, computed from the map.

    Eager channels_last maps get both sums from one ``|x|`` (the values of ``l1_activity`` and
    the channel means to the bit), written into ``scratch`` (like ``x``, in the weight dtype)
    when given: writing ``|x|`` twice per map into fresh memory, whose pages the kernel then
    faults in, and for half-precision maps converting it to float32 for each sum, were most of
    the eager layer's time (bench/fusion_layer_outside_graph.py).
    """
    if _eager_channels_last(x):
        if scratch is None:
            magnitude = x.abs()
        elif scratch.dtype == x.dtype:
            magnitude = torch.abs(x, out=scratch)
        else:
            magnitude = scratch.copy_(x).abs_()
        return MapStats(magnitude.sum(dim=1, keepdim=True, dtype=_weight_dtype(x)),
                        magnitude.sum(dim=(2, 3), keepdim=True, dtype=_weight_dtype(x))
                        / (x.shape[2] * x.shape[3]))
    return MapStats(l1_activity(x), _mean_magnitude(x))


def cam_weights_from_means(
    pooled_ir: torch.Tensor, pooled_vis: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-attention weights (eq. 15) from each camera's (B, C, 1, 1) channel means of |x|."""
    weight_ir = _share(pooled_ir, pooled_vis, eps)
    return weight_ir, 1 - weight_ir


def cam_weights(
    ir: torch.Tensor, vis: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-attention weights (eq. 14-15).

    The global pooling Omega is the mean magnitude ``mean_{y,x} |x_c|`` per channel: base and
    detail maps come out of tanh and can be negative, and a plain mean could cancel to 0 or go
    negative and push the weights outside [0, 1].
    ``lambda_ir = (p_ir + eps) / (p_ir + p_vis + 2 eps)``, ``lambda_vis = 1 - lambda_ir``.

    Args:
        ir, vis: (B, C, H, W) feature maps of the two cameras.
        eps: division guard.

    Returns:
        ``(lambda_ir, lambda_vis)``, each (B, C, 1, 1), in [0, 1], summing to 1.
    """
    return cam_weights_from_means(_mean_magnitude(ir), _mean_magnitude(vis), eps)


def _stacked_activity(
    maps: Sequence[torch.Tensor], stats: Sequence[MapStats | None] | None
) -> torch.Tensor:
    """(B, K, H, W): the activity of each of K maps, from its stats where given."""
    stats = stats if stats is not None else [None] * len(maps)
    return torch.cat(
        [s.activity if s is not None else l1_activity(x) for x, s in zip(maps, stats)], dim=1
    )


def spatial_ir_weights(
    name: str,
    ir_maps: Sequence[torch.Tensor],
    vis_maps: Sequence[torch.Tensor],
    config: FusionConfig,
    ir_stats: Sequence[MapStats | None] | None = None,
    vis_stats: Sequence[MapStats | None] | None = None,
) -> torch.Tensor | float:
    """IR weight of a spatial rule for K map pairs at once.

    Args:
        name: ``average``, ``weighted``, ``l1`` or ``saliency``.
        ir_maps, vis_maps: K (B, C_k, H, W) feature maps per camera, pairwise of equal shape.
        config: the rule's settings.
        ir_stats, vis_stats: K :class:`MapStats` (or None) per camera, read instead of the maps
            where given.

    Returns:
        A float for the fixed rules, else (B, K, H, W) with plane k weighting pair k.
    """
    if name == "average":
        return 0.5
    if name == "weighted":
        return config.gamma
    activity_ir = _stacked_activity(ir_maps, ir_stats)
    activity_vis = _stacked_activity(vis_maps, vis_stats)
    if name == "l1":
        return l1_weights_from_activity(activity_ir, activity_vis, config.eps)
    return saliency_weights_from_activity(
        activity_ir, activity_vis, config.guided_radius, config.guided_eps, config.eps
    )


def _convex_mix(vis: torch.Tensor, ir: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """``vis + weight * (ir - vis)``, i.e. ``torch.lerp(vis, ir, weight)`` up to rounding.

    Eager PyTorch and Inductor run ``lerp`` as one fused kernel; ``torch.export`` (the road to
    OpenVINO, TensorRT and ONNX) decomposes it into two full-size branches and a select, so
    exported graphs get the plain chain instead, which their compilers fuse into one pass.
    """
    if torch.compiler.is_exporting():
        return vis + weight * (ir - vis)
    return torch.lerp(vis, ir, weight)


def fuse_maps(
    ir: torch.Tensor,
    vis: torch.Tensor,
    config: FusionConfig | None = None,
    spatial_weight: torch.Tensor | float | None = None,
    channel_means: tuple[torch.Tensor, torch.Tensor] | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fuse one IR/visible map pair with ``config.rule``.

    Every rule but ``sum`` is a convex combination ``w * ir + (1 - w) * vis`` (see
    :func:`_convex_mix`). With CAM, eq. 17 ``0.5 * (F_spa + F_cha)`` equals one such
    combination with ``w = 0.5 * (w_spa + lambda)``, broadcast to (B, C, H, W).

    Args:
        ir, vis: (B, C, H, W) maps of the same shape, dtype and device.
        config: the rule and its settings; default ``FusionConfig()`` (``saliency+cam``).
        spatial_weight: the spatial rule's IR weight, (B, 1, H, W) or a float, when the caller
            has computed it already (:class:`FusionLayer` does so for all maps at once);
            None computes it here. Ignored by ``sum`` and ``cam``.
        channel_means: ``(pooled_ir, pooled_vis)``, each (B, C, 1, 1) mean of |x| per channel,
            when the caller has them (:class:`MapStats`); None computes them here. Read by the
            ``cam`` rules only.
        scratch: a tensor like ``ir`` (shape and dtype) that the full-size weight of a ``+cam``
            rule may be written into (eager mode reuses one for all maps rather than faulting in
            the pages of a fresh one each time); None allocates it.

    Returns:
        (B, C, H, W) fused map in the inputs' dtype.
    """
    if config is None:
        config = FusionConfig()
    if ir.shape != vis.shape:
        raise StreamFuseError(
            f"fuse_maps: IR map {tuple(ir.shape)} and visible map {tuple(vis.shape)} differ; "
            "encode frames of the same size"
        )
    if config.rule == "sum":
        return ir + vis
    spatial_name, _, cam = config.rule.partition("+")
    if spatial_name == "cam" or cam:
        if channel_means is None:
            channel_means = (_mean_magnitude(ir), _mean_magnitude(vis))
        cam_ir_weight = cam_weights_from_means(*channel_means, config.eps)[0]
    if spatial_name == "cam":
        ir_weight = cam_ir_weight
    else:
        if spatial_weight is None:
            spatial_weight = spatial_ir_weights(spatial_name, [ir], [vis], config)
        if cam:
            # Halve the small weight tensors first: only the final broadcast add is full size.
            # Into ``scratch``, the sum is rounded to the maps' dtype as it is stored, exactly as
            # the conversion below would round it.
            full_size = scratch if scratch is not None and scratch.dtype == ir.dtype \
                and scratch.shape == ir.shape else None
            ir_weight = torch.add(0.5 * spatial_weight, 0.5 * cam_ir_weight, out=full_size)
        else:
            ir_weight = spatial_weight
    if isinstance(ir_weight, torch.Tensor):
        ir_weight = ir_weight.to(ir.dtype)
    return _convex_mix(vis, ir, ir_weight)


def _scratch_like(x: torch.Tensor, scratch: dict[tuple, torch.Tensor],
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The tensor like ``x`` (in ``dtype``, default x's) kept in ``scratch`` for intermediate
    maps, made on first use."""
    dtype = dtype or x.dtype
    key = (x.shape, dtype, x.device, x.stride())
    if key not in scratch:
        scratch[key] = torch.empty_like(x, dtype=dtype)
    return scratch[key]


def _eager_stats(
    maps: Sequence[torch.Tensor],
    stats: Sequence[MapStats | None],
    ruled: list[int],
    scratch: dict[tuple, torch.Tensor],
) -> tuple[MapStats | None, ...]:
    """``stats``, with those missing for the ``ruled`` eager channels_last maps computed from
    one |x| each (:func:`map_stats`, into a map of ``scratch``); the others stay as given."""
    return tuple(
        map_stats(x, _scratch_like(x, scratch, _weight_dtype(x))) if given is None and i in ruled
        else given
        for i, (x, given) in enumerate(zip(maps, stats))
    )


class FusionLayer(nn.Module):
    """The test-time fusion layer: fuses the encoder's four maps (f1, f2, B, D) pairwise.

    Maps named in ``config.apply_to`` get ``config.rule``; the others are summed. The spatial
    weights of all ruled maps come from one pass over their activities stacked as channels
    (:func:`spatial_ir_weights`), identical per map to :func:`fuse_maps` on that map alone but
    with one histogram, one guided filter and one set of divisions for all of them.
    The activities and channel means come from the maps, or from :class:`MapStats` passed along
    with them. It has no parameters.
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else FusionConfig()
        self._sum_config = replace(self.config, rule="sum")

    def forward(
        self,
        ir_features: tuple[torch.Tensor, ...],
        vis_features: tuple[torch.Tensor, ...],
        ir_stats: Sequence[MapStats | None] | None = None,
        vis_stats: Sequence[MapStats | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: two 4-tuples (f1, f2, B, D) of (B, 64, H, W) maps, and optionally for each
        camera a 4-tuple of their :class:`MapStats` (None for a map whose stats are to be
        computed here). Returns the fused 4-tuple."""
        if len(ir_features) != len(MAP_NAMES) or len(vis_features) != len(MAP_NAMES):
            raise StreamFuseError(
                f"FusionLayer: expected {len(MAP_NAMES)} maps {MAP_NAMES} per camera, got "
                f"{len(ir_features)} (IR) and {len(vis_features)} (visible)"
            )
        ir_stats = tuple(ir_stats) if ir_stats is not None else (None,) * len(MAP_NAMES)
        vis_stats = tuple(vis_stats) if vis_stats is not None else (None,) * len(MAP_NAMES)
        config = self.config
        ruled = [i for i, name in enumerate(MAP_NAMES) if name in config.apply_to]
        spatial_name, _, cam = config.rule.partition("+")
        # Eager maps: a rule reading both sums of a map gets them from one |x|, and |x| and the
        # full-size mixing weights are written into one scratch map, not fresh memory each time
        # (out= tensors have no gradient, so not while one is recorded).
        recording = torch.is_grad_enabled() and any(
            x.requires_grad for x in (*ir_features, *vis_features))
        eager = not recording and all(_eager_channels_last(x) for x in (*ir_features, *vis_features))
        scratch: dict[tuple, torch.Tensor] = {}
        if eager and cam and spatial_name != "cam":
            ir_stats = _eager_stats(ir_features, ir_stats, ruled, scratch)
            vis_stats = _eager_stats(vis_features, vis_stats, ruled, scratch)
        spatial: torch.Tensor | float | None = None
        if ruled and config.rule != "sum" and spatial_name != "cam":
            # One weight computation for all ruled maps, stacked as channels.
            spatial = spatial_ir_weights(
                spatial_name,
                [ir_features[i] for i in ruled],
                [vis_features[i] for i in ruled],
                config,
                [ir_stats[i] for i in ruled],
                [vis_stats[i] for i in ruled],
            )
        fused = []
        for i, (ir, vis) in enumerate(zip(ir_features, vis_features)):
            if i not in ruled:
                fused.append(fuse_maps(ir, vis, self._sum_config))
                continue
            plane = ruled.index(i)
            weight = spatial[:, plane : plane + 1] if isinstance(spatial, torch.Tensor) else spatial
            means = None
            if ir_stats[i] is not None and vis_stats[i] is not None:
                means = (ir_stats[i].channel_mean, vis_stats[i].channel_mean)
            full_size = _scratch_like(ir, scratch) if eager and cam else None
            fused.append(fuse_maps(ir, vis, config, weight, means, full_size))
        f1, f2, base, detail = fused
        return f1, f2, base, detail

    def extra_repr(self) -> str:
        return repr(self.config)
