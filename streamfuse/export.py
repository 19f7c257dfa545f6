"""ONNX export of the whole fusion path (encoder -> fusion layer -> decoder), and its check.

The file takes two inputs ``ir`` and ``vis`` ``(B, 1, H, W)`` float32 in [0, 1] and gives
``fused`` ``(B, 1, H, W)``: the batch size is fixed at export, height and width are dynamic
(>= 8). PyTorch's exporter (``torch.onnx.export(..., dynamo=True)``, the default since 2.9)
needs the ``onnx`` and ``onnxscript`` packages: the optional extra ``streamfuse[onnx]``.
The check runs the ONNX checker and then the file itself, with onnxruntime or OpenVINO when one
is installed, against eager PyTorch on an input of another size than the export example.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamfuse.errors import StreamFuseError
from streamfuse.fuser import FusionNet

INPUT_NAMES = ("ir", "vis")
OUTPUT_NAME = "fused"
EXPORT_SIDE = 64
MIN_SIDE = 8


def require_onnx_exporter() -> None:
    """Raise the one-line install hint when PyTorch's ONNX exporter cannot run."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise StreamFuseError(
            f"ONNX export needs {' and '.join(missing)} (PyTorch's exporter): "
            "pip install 'streamfuse[onnx]' (or pip install onnx onnxscript)"
        )


def export_onnx(net: FusionNet, path: str | Path, batch: int = 1) -> Path:
    """Write ``net`` (fp32, eval) as an ONNX file with dynamic height and width; returns the path."""
    require_onnx_exporter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height = torch.export.Dim("height", min=MIN_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE)
    example = torch.rand(batch, 1, EXPORT_SIDE, EXPORT_SIDE)
    spatial = {2: height, 3: width}
    with torch.no_grad():
        torch.onnx.export(
            net.eval(), (example, example.clone()), str(path), dynamo=True,
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_shapes=(spatial, spatial), external_data=False,
        )
    return path


def onnx_runtime_name() -> str | None:
    """The runtime :func:`run_onnx` will use: onnxruntime, else OpenVINO, else None."""
    for name in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def run_onnx(path: str | Path, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Run the exported file on ``(B, 1, H, W)`` float32 inputs with :func:`onnx_runtime_name`."""
    runtime = onnx_runtime_name()
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAMES[0]: ir, INPUT_NAMES[1]: vis})[0]
    if runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.array(compiled([ir, vis])[0], copy=True)
    raise StreamFuseError(
        "no runtime to run the ONNX file back: pip install onnxruntime or 'streamfuse[openvino]'"
    )


@dataclass(frozen=True)
class OnnxCheck:
    """Outcome of :func:`check_onnx`: the runtime used (None: not run) and the largest
    absolute difference from eager PyTorch on the check input."""

    runtime: str | None
    max_abs_diff: float | None
    shape: tuple[int, ...]


def check_onnx(path: str | Path, net: FusionNet, ir: torch.Tensor, vis: torch.Tensor) -> OnnxCheck:
    """ONNX checker on ``path``, then (when a runtime is installed) the file's output on
    ``ir``/``vis`` ``(B, 1, H, W)`` against ``net`` in eager fp32."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    runtime = onnx_runtime_name()
    if runtime is None:
        return OnnxCheck(None, None, tuple(ir.shape))
    with torch.inference_mode():
        expected = net.eval()(ir, vis).numpy()
    produced = run_onnx(path, ir.numpy(), vis.numpy())
    return OnnxCheck(runtime, float(np.abs(produced - expected).max()), tuple(ir.shape))
