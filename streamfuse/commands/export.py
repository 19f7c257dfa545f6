"""`streamfuse export`: write the whole fusion path as an ONNX file and check it by running it back."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from streamfuse.checkpoint import load_checkpoint
from streamfuse.errors import StreamFuseError
from streamfuse.export import check_onnx, export_onnx
from streamfuse.fuser import FusionNet, resolve_weights
from streamfuse.fusion import FusionConfig
from streamfuse.model import fold_model
from streamfuse.outputs import check_writable_file, output_path

# The check input differs in size from the export example, so it proves height/width are dynamic.
CHECK_SHAPE = (72, 100)
# fp32 engines must match eager PyTorch to this (images in [0, 1]).
CHECK_TOLERANCE = 1e-3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the fusion network (encoder, fusion layer, decoder) to ONNX",
        description="Write the whole fusion path as one ONNX file (inputs ir, vis: (B, 1, H, W) "
        "float32 in [0, 1]; output fused; height and width dynamic), then check it with the ONNX "
        "checker and run it back against PyTorch with onnxruntime or OpenVINO when installed. "
        "Needs the extra streamfuse[onnx].",
    )
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="file format (onnx)")
    parser.add_argument("-o", "--output", required=True, type=output_path, help="file to write, e.g. didfuse.onnx")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped models/didfuse_flir.pt)")
    parser.add_argument("--rule", default=FusionConfig.rule, help=f"fusion rule (default {FusionConfig.rule})")
    parser.add_argument("--batch", type=int, default=1, help="pairs per call, fixed in the file (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise StreamFuseError(f"--batch {args.batch}: must be at least 1")
    check_writable_file(args.output, "-o")
    model, _ = load_checkpoint(resolve_weights(args.weights))
    net = FusionNet(fold_model(model), FusionConfig(rule=args.rule)).eval()
    print(f"exporting {args.rule} for batch {args.batch} to {args.output} ...")
    path = export_onnx(net, args.output, args.batch)
    generator = torch.Generator().manual_seed(0)
    ir, vis = (torch.rand(args.batch, 1, *CHECK_SHAPE, generator=generator) for _ in range(2))
    check = check_onnx(path, net, ir, vis)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); ONNX checker passed")
    if check.runtime is None:
        print("not run back: install onnxruntime or streamfuse[openvino] to compare with PyTorch")
        return 0
    print(f"run back with {check.runtime} on {check.shape}: max |onnx - torch| = {check.max_abs_diff:.2e}")
    if check.max_abs_diff > CHECK_TOLERANCE:
        raise StreamFuseError(
            f"{path}: the exported graph differs from PyTorch by {check.max_abs_diff:.2e} "
            f"(> {CHECK_TOLERANCE}) under {check.runtime}; the file is not trustworthy"
        )
    return 0
