"""`streamfuse fuse`: fuse one IR/visible image pair, or two folders of pairs matched by stem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from streamfuse.errors import StreamFuseError
from streamfuse.fuser import Fuser
from streamfuse.fusion import FusionConfig
from streamfuse.images import pair_files, read_image, write_png


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse", help="fuse IR/visible image pairs into PNGs",
        description="Fuse an infrared and a visible image (or two folders of pairs matched by "
        "file stem) into 8-bit PNGs. Colour visible input keeps its colour.",
    )
    parser.add_argument("--ir", required=True, type=Path, help="infrared image file or folder")
    parser.add_argument("--vis", required=True, type=Path, help="visible image file or folder")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output PNG (single pair) or folder (pairs; written as <stem>.png)")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped models/didfuse_flir.pt)")
    parser.add_argument("--rule", default=FusionConfig.rule, help=f"fusion rule (default {FusionConfig.rule}; e.g. sum, l1+cam)")
    parser.add_argument("--resize", action="store_true", help="resize IR to the visible size when they differ")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(func=run)


def load_pair(ir_path: Path, vis_path: Path, resize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair; IR is brought to gray (and to the visible size with ``resize``)."""
    ir = read_image(ir_path, gray=True)
    vis = read_image(vis_path)
    if ir.shape[:2] != vis.shape[:2]:
        if not resize:
            raise StreamFuseError(
                f"{ir_path} is {ir.shape[1]}x{ir.shape[0]} but {vis_path} is "
                f"{vis.shape[1]}x{vis.shape[0]}; pass --resize to bring IR to the visible size"
            )
        ir = cv2.resize(ir, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_AREA
                        if ir.shape[0] > vis.shape[0] else cv2.INTER_LINEAR)
    if min(vis.shape[:2]) < 8:
        raise StreamFuseError(f"{vis_path}: {vis.shape[1]}x{vis.shape[0]} is too small (need at least 8x8)")
    return ir, vis


def run(args: argparse.Namespace) -> int:
    fusion = FusionConfig(rule=args.rule)
    if args.ir.is_dir() != args.vis.is_dir():
        raise StreamFuseError(f"--ir {args.ir} and --vis {args.vis} must both be files or both be folders")
    if not args.ir.is_dir():
        fuser = Fuser.from_weights(args.weights, fusion, args.device)
        ir, vis = load_pair(args.ir, args.vis, args.resize)
        as_folder = args.output.is_dir() or not args.output.suffix
        output = args.output / f"{args.ir.stem}.png" if as_folder else args.output
        write_png(output, fuser.fuse(ir, vis))
        print(f"wrote {output}")
        return 0
    return fuse_folders(args, fusion)


def fuse_folders(args: argparse.Namespace, fusion: FusionConfig) -> int:
    pairs, unmatched = pair_files(args.ir, args.vis)
    if not pairs:
        raise StreamFuseError(f"no pairs: no image stem is in both {args.ir} and {args.vis}")
    fuser = Fuser.from_weights(args.weights, fusion, args.device)
    failures = [f"{stem}: only in one of the two folders" for stem in unmatched]
    done = 0
    for stem, ir_path, vis_path in tqdm(pairs, desc="fusing", unit="pair"):
        try:
            ir, vis = load_pair(ir_path, vis_path, args.resize)
            write_png(args.output / f"{stem}.png", fuser.fuse(ir, vis))
            done += 1
        except StreamFuseError as error:
            failures.append(str(error))
            tqdm.write(f"streamfuse fuse: skipped: {error}", file=sys.stderr)
    print(f"fused {done} of {len(pairs)} pairs into {args.output}")
    if failures:
        print(f"streamfuse fuse: {len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
