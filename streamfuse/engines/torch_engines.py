"""The PyTorch engines: ``eager`` (BatchNorm folded, channels_last, autocast) and ``compile``
(``torch.compile`` of the whole FusionNet as one graph, one compiled graph per input shape)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from streamfuse.engines.optimize import (
    fold_zero_padding, pad_input_channels, taps_for_narrow_convs, taps_for_narrow_outputs,
)
from streamfuse.fuser import Fuser
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class EagerFuser(Fuser):
    """PyTorch eager mode: BatchNorm folded into the convolutions, weights and activations in
    channels_last (oneDNN's and cuDNN's fast layout), convolutions under autocast for bf16/fp16.

    On CUDA also: conv7 as a 1x1 convolution to its nine tap planes plus their shifted sum
    (:func:`~streamfuse.engines.optimize.taps_for_narrow_outputs`), conv1's one-channel input
    padded to 8 zero channels for cuDNN's tensor-core kernels
    (:func:`~streamfuse.engines.optimize.pad_input_channels`) and cuDNN's per-shape algorithm
    search. The fusion layer computes its weights in float32 whatever the autocast dtype (see
    :mod:`streamfuse.fusion`); the output is float32.
    """

    engine = "eager"

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str, device: torch.device,
                 precision: str = "fp32", cache_dir: str | Path | None = None):
        super().__init__(model, fusion, device, fold_bn=True)
        fold_zero_padding(self.net)
        if self.device.type == "cuda":
            self._narrow_conv_rewrites()
            pad_input_channels(self.net)
            # A stream keeps one frame size, so cuDNN's per-shape algorithm search (one slow
            # first call per shape) pays for itself after a few frames.
            torch.backends.cudnn.benchmark = True
        self.precision = precision
        self.net = self.net.to(memory_format=torch.channels_last)
        self._autocast_dtype = AUTOCAST_DTYPES[precision]

    def _narrow_conv_rewrites(self) -> None:
        taps_for_narrow_outputs(self.net)

    def _run(self, ir: Tensor, vis: Tensor) -> Tensor:
        return self.net(ir, vis)

    @torch.inference_mode()
    def fuse_tensors(self, ir: Tensor, vis: Tensor) -> Tensor:
        """``(B, 1, H, W)`` float in [0, 1] each -> fused ``(B, 1, H, W)`` float32 in [0, 1]."""
        ir = ir.to(self.device).contiguous(memory_format=torch.channels_last)
        vis = vis.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self._autocast_dtype,
                            enabled=self._autocast_dtype is not None):
            fused = self._run(ir, vis)
        return fused.float()


class CompiledFuser(EagerFuser):
    """``torch.compile`` of the whole FusionNet (encoder -> fusion layer -> decoder) as one graph
    (``fullgraph``), specialised to each input shape (``dynamic=False``): the first call with a
    new shape compiles (tens of seconds on a CPU), later calls reuse that graph. Dynamo keeps up
    to ``torch._dynamo.config.recompile_limit`` shapes (8 by default).

    CPU: Inductor with ``freezing`` (weights become constants, convolutions are pre-packed for
    oneDNN). CUDA: mode ``reduce-overhead``, i.e. CUDA graphs, which replay the whole path as
    one launch for a fixed shape; outputs are copied out of the graph's memory pool because the
    next replay overwrites it. On CUDA the narrow convolutions become taps (conv1 as a pointwise
    sum of its taps, conv7 as tap planes plus their shifted sum:
    :func:`~streamfuse.engines.optimize.taps_for_narrow_convs`) and Inductor tunes each Triton
    kernel's launch by coordinate descent: on an H100 at 640x512, batch 32, 583 -> 711 pairs/s,
    for a first compile of about a minute instead of seconds per shape
    (bench/results/gpu-h100-ab-s12.json).
    """

    engine = "compile"

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str, device: torch.device,
                 precision: str = "fp32", cache_dir: str | Path | None = None):
        super().__init__(model, fusion, device, precision)
        self._cuda_graphs = self.device.type == "cuda"
        if self._cuda_graphs:
            # mode="reduce-overhead" is options {"triton.cudagraphs": True}; a call takes one or
            # the other, and the tuning needs options.
            self._compiled = torch.compile(self.net, fullgraph=True, dynamic=False, options={
                "triton.cudagraphs": True, "coordinate_descent_tuning": True})
        else:
            # conv1 (one input channel) writes its map contiguous, and at batch 1 Inductor (torch
            # 2.13) miscompiles a half-precision map's copy to channels_last fused with its
            # per-channel sums over the pixels (the CAM means): garbage and NaN, which the
            # saliency histogram then rejects as out-of-range bins. With eight input channels
            # (seven of them zero) conv1 writes channels_last itself, and no such copy exists.
            pad_input_channels(self.net)
            self.net = self.net.to(memory_format=torch.channels_last)
            self._compiled = torch.compile(self.net, fullgraph=True, dynamic=False,
                                           options={"freezing": True})

    def _narrow_conv_rewrites(self) -> None:
        taps_for_narrow_convs(self.net)

    def _run(self, ir: Tensor, vis: Tensor) -> Tensor:
        if not self._cuda_graphs:
            return self._compiled(ir, vis)
        torch.compiler.cudagraph_mark_step_begin()
        return self._compiled(ir, vis).clone()
