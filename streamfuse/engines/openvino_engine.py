"""The ``openvino`` engine: the whole fusion path converted to OpenVINO and run on the CPU.

FusionNet is exported once per batch size with ``torch.export`` (height and width dynamic) and
converted with ``openvino.convert_model``; the converted model is saved under the cache folder,
keyed by the network digest and the versions, so a second start only reads it. For each input
shape the model is reshaped to that static shape and compiled (static shapes let the CPU plugin
plan memory and pick kernels once); compiled models are kept per shape, and OpenVINO's own
``CACHE_DIR`` keeps the compiled blobs on disk.

bf16 is OpenVINO's inference-precision hint, honoured on CPUs with AVX512-BF16 or AMX: the
plugin runs convolutions and element-wise work in bf16. int8 (the default where the CPU has
bf16) runs the ten convolutions that read and write 64-channel maps in int8 (see
:mod:`streamfuse.engines.int8`; ranges calibrated once per network on the sample pairs, shipped
for the shipped weights, else saved in the cache folder), the rest in bf16 where the CPU has it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from streamfuse.engines import cpu_supports_bf16
from streamfuse.engines.cache import ShapeCache, cache_root, network_digest
from streamfuse.engines.int8 import (CALIBRATION_PAIRS, RANGES_FORMAT, SHIPPED_RANGES,
                                     calibration_pairs, input_ranges, quantize_wide_convolutions,
                                     read_ranges, write_ranges)
from streamfuse.errors import StreamFuseError
from streamfuse.engines.optimize import rewrite_for_graph_compiler
from streamfuse.fuser import Fuser
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse

try:
    import openvino as ov
except ImportError:  # the engine is an optional extra
    ov = None

INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}
# The size the network is exported at; any height and width >= MIN_SIDE run afterwards.
EXPORT_SIDE = 64
MIN_SIDE = 8


def export_program(net: torch.nn.Module, batch: int) -> torch.export.ExportedProgram:
    """``torch.export`` of FusionNet for ``batch`` pairs, height and width dynamic (>= 8)."""
    height = torch.export.Dim("height", min=MIN_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE)
    example = torch.rand(batch, 1, EXPORT_SIDE, EXPORT_SIDE)
    spatial = {2: height, 3: width}
    return torch.export.export(net, (example, example.clone()), dynamic_shapes=(spatial, spatial))


class OpenVINOFuser(Fuser):
    """OpenVINO on the CPU, fp32 or bf16; see the module docstring."""

    engine = "openvino"

    def __init__(self, model: DIDFuse, fusion: FusionConfig | str, device: torch.device,
                 precision: str = "bf16", cache_dir: str | Path | None = None):
        if ov is None:
            raise StreamFuseError(
                "engine openvino needs the OpenVINO runtime: pip install 'streamfuse[openvino]' "
                "(or pip install openvino)"
            )
        if torch.device(device).type != "cpu":
            raise StreamFuseError(f"engine openvino runs on the CPU, not {device}; use --device cpu")
        super().__init__(model, fusion, "cpu", fold_bn=True)
        rewrite_for_graph_compiler(self.net)
        self.precision = precision
        self._cache = cache_root(cache_dir, "openvino")
        self._core = ov.Core()
        self._core.set_property({"CACHE_DIR": str(self._cache / "compiled")})
        self._converted: dict[int, "ov.Model"] = {}
        self._compiled = ShapeCache()
        self._int8_ranges: list[tuple[float, float]] | None = None

    def _model_for_batch(self, batch: int) -> "ov.Model":
        """The converted model for ``batch`` pairs (dynamic height/width), from disk when cached."""
        if batch not in self._converted:
            key = network_digest(self.net, "openvino-model", batch, ov.get_version(), torch.__version__)
            path = self._cache / f"fusionnet-{key}.xml"
            if path.is_file():
                model = self._core.read_model(path)
            else:
                # torch.export needs ordinary tensors, whatever mode the caller is in. The
                # converter's decompositions copy torch's tree specs, which makes torch 2.13 warn
                # of its own deprecated LeafSpec on the user's terminal: not ours to act on.
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`",
                                            category=FutureWarning)
                    model = ov.convert_model(export_program(self.net, batch))
                # Temporary name first: a half-written cache file must never be read back.
                partial = path.with_name(f"{path.stem}.partial.xml")
                ov.save_model(model, partial, compress_to_fp16=False)
                partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
                partial.replace(path)
            self._converted[batch] = model
        return self._converted[batch]

    def _float_precision(self) -> str:
        """OpenVINO's hint for what is not int8: bf16 under int8 where the CPU has it."""
        if self.precision == "int8":
            return "bf16" if cpu_supports_bf16() else "f32"
        return INFERENCE_PRECISION[self.precision]

    def _ranges_file_name(self) -> str:
        """The file name of this network's int8 ranges, in the cache and among shipped ones."""
        files = sorted((p.relative_to(CALIBRATION_PAIRS).as_posix(), p.stat().st_size)
                       for p in CALIBRATION_PAIRS.rglob("*") if p.is_file())
        # No OpenVINO version in the key: the ranges come from an fp32 run, and a conversion
        # that names its convolutions differently is caught by the names.
        return f"int8-ranges-{network_digest(self.net, 'int8-ranges', RANGES_FORMAT, files)}.json"

    def _calibrated_ranges(self) -> list[tuple[float, float]]:
        """The int8 input ranges of the wide convolutions, measured once per network and
        calibration set (see :mod:`streamfuse.engines.int8`): from this engine's cache, else
        from the copy shipped with the weights, else measured and cached."""
        if self._int8_ranges is None:
            name = self._ranges_file_name()
            model = self._model_for_batch(1)
            cached, shipped = self._cache / name, SHIPPED_RANGES / name
            ranges = read_ranges(model, cached)
            if ranges is None:
                ranges = read_ranges(model, shipped)
            if ranges is None:
                ranges = input_ranges(self._core, model, calibration_pairs())
                write_ranges(model, ranges, cached)
            self._int8_ranges = ranges
        return self._int8_ranges

    def _compiled_for(self, shape: tuple[int, ...]) -> "ov.CompiledModel":
        """The model compiled for inputs of exactly ``shape`` ``(B, 1, H, W)``."""
        if shape[1] != 1 or min(shape[2:]) < MIN_SIDE:
            raise StreamFuseError(
                f"openvino engine: input {shape} must be (B, 1, H, W) with H, W >= {MIN_SIDE}"
            )
        return self._compiled.get_or_build(shape, lambda: self._compile(shape))

    def _compile(self, shape: tuple[int, ...]) -> "ov.CompiledModel":
        model = self._model_for_batch(shape[0]).clone()
        if self.precision == "int8":
            quantize_wide_convolutions(model, self._calibrated_ranges())
        model.reshape({port: ov.PartialShape(list(shape)) for port in model.inputs})
        return self._core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": self._float_precision(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        })

    def fuse_tensors(self, ir: Tensor, vis: Tensor) -> Tensor:
        """``(B, 1, H, W)`` float in [0, 1] each -> fused ``(B, 1, H, W)`` float32 in [0, 1]."""
        if ir.shape != vis.shape:
            raise StreamFuseError(f"IR batch {tuple(ir.shape)} and visible batch {tuple(vis.shape)} differ")
        inputs = [np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()) for x in (ir, vis)]
        compiled = self._compiled_for(tuple(ir.shape))
        fused = compiled(inputs, share_inputs=True)[0]
        # The result lives in the request's buffer, which the next call overwrites.
        return torch.from_numpy(np.array(fused, copy=True))
