"""Inference engines: the whole fusion path (encoder -> fusion layer -> decoder) run by eager
PyTorch, ``torch.compile``, TensorRT or OpenVINO, each behind the :class:`~streamfuse.fuser.Fuser`
interface (``fuse_batch``, ``fuse``, ``fuse_tensors``), so the pipeline and the CLI pick one by name.

    engine     devices  precisions        what runs
    eager      cpu/cuda fp32, bf16, fp16  PyTorch, BatchNorm folded, channels_last, autocast
    compile    cpu/cuda fp32, bf16, fp16  torch.compile of FusionNet as one graph, per input shape
    tensorrt   cuda     fp16, fp32        torch-tensorrt (dynamo), engine cached on disk
    openvino   cpu      fp32, bf16, int8  OpenVINO, converted once, compiled per input shape

``auto`` picks the fastest engine that is installed for the device (see :func:`resolve_engine`):
on a CPU OpenVINO, measured fastest by ``streamfuse bench`` (bench/results/), else ``compile``;
on CUDA TensorRT, else ``compile``. ``auto`` precision is bf16 on CPUs with AVX512-BF16 or AMX,
fp16 on CUDA, fp32 otherwise.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import torch

from streamfuse.checkpoint import load_checkpoint
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import Fuser, resolve_weights
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse

__all__ = [
    "ENGINES",
    "build_fuser",
    "PRECISIONS",
    "check_engine_runs",
    "cpu_supports_bf16",
    "create_fuser",
    "engine_available",
    "resolve_device",
    "resolve_engine",
    "resolve_precision",
]

ENGINES = ("eager", "compile", "tensorrt", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# name -> (module, class); engine modules are imported only when chosen, so the optional
# packages (openvino, torch_tensorrt) are never needed for the others.
_ENGINE_CLASSES = {
    "eager": ("streamfuse.engines.torch_engines", "EagerFuser"),
    "compile": ("streamfuse.engines.torch_engines", "CompiledFuser"),
    "tensorrt": ("streamfuse.engines.tensorrt_engine", "TensorRTFuser"),
    "openvino": ("streamfuse.engines.openvino_engine", "OpenVINOFuser"),
}
_ENGINE_PACKAGES = {"tensorrt": "torch_tensorrt", "openvino": "openvino"}


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    and slower than fp32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def engine_available(engine: str) -> bool:
    """Whether the optional package an engine needs is installed (eager/compile always are)."""
    package = _ENGINE_PACKAGES.get(engine)
    return package is None or importlib.util.find_spec(package) is not None


def resolve_device(name: str | torch.device) -> torch.device:
    """``name`` as a device, checked: CUDA must be visible to this PyTorch."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StreamFuseError(f"device {str(name)!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StreamFuseError(f"device {str(name)!r}: this PyTorch sees no CUDA GPU; use device cpu, "
                              "or install a CUDA build of PyTorch")
    if device.type not in ("cpu", "cuda"):
        raise StreamFuseError(f"device {str(name)!r}: only cpu and cuda are supported")
    return device


def resolve_engine(engine: str, device: torch.device) -> str:
    """``auto`` -> the fastest installed engine for ``device``; other names are checked."""
    if engine == "auto":
        if device.type == "cuda":
            return "tensorrt" if engine_available("tensorrt") else "compile"
        return "openvino" if engine_available("openvino") else "compile"
    if engine not in ENGINES:
        raise StreamFuseError(f"engine {engine!r} is unknown; use auto or one of {', '.join(ENGINES)}")
    return engine


def check_engine_runs(engine: str, device: torch.device) -> None:
    """Raise a one-line StreamFuseError when ``engine`` cannot run on ``device`` here, saying
    what to install or which device to use."""
    if engine == "tensorrt":
        from streamfuse.engines.tensorrt_engine import tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise StreamFuseError(reason)
        if device.type != "cuda":
            raise StreamFuseError(f"engine tensorrt runs on a CUDA GPU, not {device}; use --device cuda")
    if engine == "openvino":
        if not engine_available("openvino"):
            raise StreamFuseError(
                "engine openvino needs the OpenVINO runtime: pip install 'streamfuse[openvino]'"
            )
        if device.type != "cpu":
            raise StreamFuseError(f"engine openvino runs on the CPU, not {device}; use --device cpu")


def resolve_precision(precision: str, engine: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA; on CPUs with native bf16, int8 for the openvino engine (the
    fastest that stays within the reduced-precision bound on real pairs; see
    :mod:`streamfuse.engines.int8`) and bf16 for the others; fp32 elsewhere. Other names are
    checked against what ``engine`` can run on ``device``."""
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        if not cpu_supports_bf16():
            return "fp32"
        # Every CPU with AVX512-BF16 or AMX also has int8 dot products (VNNI, AMX-INT8).
        return "int8" if engine == "openvino" else "bf16"
    if precision not in PRECISIONS:
        raise StreamFuseError(f"precision {precision!r} is unknown; use auto or one of {', '.join(PRECISIONS)}")
    if device.type == "cpu" and precision == "fp16":
        raise StreamFuseError("precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    if device.type == "cpu" and precision == "bf16" and not cpu_supports_bf16():
        raise StreamFuseError(
            "precision bf16: this CPU has neither AVX512-BF16 nor AMX (bf16 would be emulated and "
            "slower than fp32); use --precision fp32"
        )
    if precision == "int8" and engine != "openvino":
        raise StreamFuseError(f"precision int8 runs on the openvino engine, not {engine}; "
                              "use --engine openvino (CPU)")
    if engine == "tensorrt" and precision == "bf16":
        raise StreamFuseError("engine tensorrt runs fp16 or fp32; use --precision fp16")
    return precision


def create_fuser(
    weights: str | Path | None = None,
    rule: FusionConfig | str = FusionConfig(),
    engine: str = "auto",
    precision: str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> Fuser:
    """A :class:`~streamfuse.fuser.Fuser` for ``weights`` (default: the shipped weights) that runs
    the fusion ``rule`` with ``engine`` at ``precision`` on ``device``.

    ``cache_dir`` holds what TensorRT and OpenVINO build (default ``$STREAMFUSE_CACHE`` or
    ``~/.cache/streamfuse``), so a second start skips the build.
    """
    model, _ = load_checkpoint(resolve_weights(weights))
    return build_fuser(model, rule, engine, precision, device, cache_dir)


def build_fuser(
    model: DIDFuse,
    rule: FusionConfig | str = FusionConfig(),
    engine: str = "auto",
    precision: str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> Fuser:
    """:func:`create_fuser` for a network already in memory (``model`` is not modified)."""
    torch_device = resolve_device(device)
    engine = resolve_engine(engine, torch_device)
    check_engine_runs(engine, torch_device)
    precision = resolve_precision(precision, engine, torch_device)
    module_name, class_name = _ENGINE_CLASSES[engine]
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(model, rule, torch_device, precision, cache_dir=cache_dir)
