"""The ``tensorrt`` engine: torch-tensorrt's dynamo path on a CUDA GPU, built engines cached.

FusionNet is exported with ``torch.export`` for one static input shape and compiled by
``torch_tensorrt.dynamo.compile``. For fp16 the network's weights and inputs are half and the
build uses explicit typing, so TensorRT keeps the dtypes of the graph: convolutions in fp16, the
fusion layer's weight maps in float32 (it casts them itself, see :mod:`streamfuse.fusion`). Ops
TensorRT has no converter for stay in PyTorch inside the same compiled module (torch-tensorrt
partitions the graph; ``require_full_compilation`` stays off).

A build takes minutes, so the compiled module is saved under the cache folder with a name keyed
by the network digest (weights and fusion settings), the input shape, the precision, the GPU
(name and compute capability) and the torch, torch-tensorrt and TensorRT versions; a second
start with the same key loads it in seconds. Each new input shape is built (or loaded) once per
process and kept.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from streamfuse.engines.cache import ShapeCache, cache_root, network_digest
from streamfuse.errors import StreamFuseError
from streamfuse.engines.optimize import fold_zero_padding
from streamfuse.fuser import Fuser
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse

TENSORRT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
INSTALL_HINT = (
    "engine tensorrt needs an NVIDIA GPU with a CUDA build of PyTorch and torch-tensorrt: "
    "pip install 'streamfuse[tensorrt]'"
)


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT engine cannot run here (one line), or None when it can."""
    if not torch.cuda.is_available():
        return f"{INSTALL_HINT} (this PyTorch sees no CUDA GPU)"
    if importlib.util.find_spec("torch_tensorrt") is None:
        return f"{INSTALL_HINT} (torch_tensorrt is not installed)"
    return None


class TensorRTFuser(Fuser):
    """torch-tensorrt on CUDA, fp16 (default) or fp32; see the module docstring."""

    engine = "tensorrt"

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str, device: torch.device,
                 precision: str = "fp16", cache_dir: str | Path | None = None):
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise StreamFuseError(reason)
        if torch.device(device).type != "cuda":
            raise StreamFuseError(f"engine tensorrt runs on a CUDA GPU, not {device}; use --device cuda")
        import tensorrt
        import torch_tensorrt

        self._torch_tensorrt = torch_tensorrt
        super().__init__(model, fusion, device, fold_bn=True)
        fold_zero_padding(self.net)
        self.precision = precision
        self._dtype = TENSORRT_DTYPES[precision]
        self.net = self.net.to(self._dtype)
        self._cache = cache_root(cache_dir, "tensorrt")
        gpu = torch.cuda.get_device_properties(self.device)
        self._build_key = (precision, gpu.name, f"sm{gpu.major}{gpu.minor}", torch.__version__,
                           torch_tensorrt.__version__, tensorrt.__version__)
        self._modules = ShapeCache()

    def _module_for(self, shape: tuple[int, ...]) -> torch.nn.Module:
        """The TensorRT module for inputs of exactly ``shape``: built, or loaded from the cache."""
        return self._modules.get_or_build(shape, lambda: self._load(shape))

    def _load(self, shape: tuple[int, ...]) -> torch.nn.Module:
        key = network_digest(self.net, "tensorrt", shape, *self._build_key)
        path = self._cache / f"fusionnet-{key}.ep"
        if not path.is_file():
            # torch.export needs ordinary tensors, whatever mode the caller is in.
            with torch.inference_mode(False), torch.no_grad():
                self._build(shape, path)
        return self._torch_tensorrt.load(str(path)).module()

    def _build(self, shape: tuple[int, ...], path: Path) -> None:
        """Export, build and save the module for ``shape`` to ``path`` (written whole or not at all)."""
        example = torch.rand(shape, device=self.device, dtype=self._dtype)
        inputs = [example, example.clone()]
        exported = torch.export.export(self.net, tuple(inputs))
        built = self._torch_tensorrt.dynamo.compile(
            exported, arg_inputs=inputs, use_explicit_typing=True, min_block_size=1,
            device=self.device,
        )
        partial = path.with_name(f"{path.stem}.partial.ep")
        self._torch_tensorrt.save(built, str(partial), output_format="exported_program",
                                  arg_inputs=inputs)
        partial.replace(path)

    def fuse_tensors(self, ir: Tensor, vis: Tensor) -> Tensor:
        """``(B, 1, H, W)`` float in [0, 1] each -> fused ``(B, 1, H, W)`` float32 in [0, 1]."""
        if ir.shape != vis.shape:
            raise StreamFuseError(f"IR batch {tuple(ir.shape)} and visible batch {tuple(vis.shape)} differ")
        module = self._module_for(tuple(ir.shape))
        with torch.inference_mode():
            return module(ir.to(self.device, self._dtype), vis.to(self.device, self._dtype)).float()
