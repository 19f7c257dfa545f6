"""`streamfuse fuse`: fuse one IR/visible image pair, two folders of pairs matched by stem, or two
videos into one (through the streaming pipeline, as `streamfuse run` would)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from streamfuse.allocator import keep_freed_memory
from streamfuse.calibration import IrRegistrar, load_calibration
from streamfuse.checkpoint import check_checkpoint_exists
from streamfuse.commands.run import log_to_terminal, report
from streamfuse.engines import ENGINES, PRECISIONS, create_fuser
from streamfuse.errors import StreamFuseError
from streamfuse.fusion import FusionConfig
from streamfuse.gain import GAIN_HELP, Gain
from streamfuse.images import (IMAGE_SUFFIXES, false_colour_warning, is_false_colour, pair_files,
                               read_image, write_png)
from streamfuse.outputs import check_writable_file, check_writable_folder, output_path
from streamfuse.pipeline.config import (
    InferenceConfig, PipelineConfig, SinksConfig, SourceConfig, VideoSinkConfig, check_files,
)
from streamfuse.pipeline.runner import run_pipeline

# Containers PyAV/FFmpeg read that users name as --ir/--vis; anything else is read as an image.
VIDEO_SUFFIXES = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".mpg", ".mpeg", ".wmv", ".flv"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse", help="fuse IR/visible image pairs into PNGs, or two videos into one",
        description="Fuse an infrared and a visible image (or two folders of pairs matched by "
        "file stem) into 8-bit PNGs, or two videos into one H.264 video: frames paired by "
        "timestamp, as `streamfuse run` does. Colour visible input keeps its colour.",
    )
    parser.add_argument("--ir", required=True, type=Path, help="infrared image, folder or video")
    parser.add_argument("--vis", required=True, type=Path, help="visible image, folder or video")
    parser.add_argument("-o", "--output", required=True, type=output_path,
                        help="output PNG (single pair), folder (pairs; written as <stem>.png) or "
                        "video file such as fused.mp4 (videos)")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped models/didfuse_flir.pt)")
    parser.add_argument("--rule", default=FusionConfig.rule, help=f"fusion rule (default {FusionConfig.rule}; e.g. sum, l1+cam)")
    parser.add_argument("--resize", action="store_true", help="images: resize IR to the visible size when they differ")
    parser.add_argument("--calibration", type=Path,
                        help="calibration YAML registering IR onto the visible camera (see "
                        "calibration/README.md); default: the cameras are aligned")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--engine", choices=["auto", *ENGINES],
                        help="inference engine (default: eager for images, bit-reproducible stills; "
                        "auto for videos: the fastest installed for the device, see `streamfuse bench`)")
    parser.add_argument("--precision", choices=["auto", *PRECISIONS],
                        help="fp32, bf16 (CPUs with AMX/AVX512-BF16), fp16 (CUDA) or int8 (engine "
                        "openvino); default fp32 for images, auto for videos")
    parser.add_argument("--gain", type=_gain, default=Gain(),
                        help="how IR or visible frames deeper than 8 bits (raw thermal counts) "
                        f"become 8-bit: {GAIN_HELP}; default auto, each frame's 0.5-99.5 "
                        "percentile window (see README, 16-bit thermal)")
    parser.set_defaults(func=run)


def _gain(text: str) -> Gain:
    try:
        return Gain.parse(text, "--gain")
    except StreamFuseError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--gain: ")) from None


def warn_if_false_colour(ir_path: Path) -> None:
    """A warning on stderr when the IR image is in a false-colour palette (checked on the first
    IR image of a folder): it is fused as gray, by brightness."""
    try:
        if is_false_colour(read_image(ir_path)):
            print(f"warning: {false_colour_warning(str(ir_path))}", file=sys.stderr)
    except StreamFuseError:
        pass  # an unreadable image is reported where the pair is read


def load_pair(ir_path: Path, vis_path: Path, resize: bool, registrar: IrRegistrar | None = None,
              gain: Gain = Gain()) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair (16-bit files through ``gain``); IR is brought to gray, and registered onto
    the visible camera with ``registrar`` (or resized to the visible size with ``resize``)."""
    ir = read_image(ir_path, gray=True, gain=gain)
    vis = read_image(vis_path, gain=gain)
    if registrar is not None:
        try:
            ir = registrar(ir)
        except StreamFuseError as error:
            raise StreamFuseError(f"{ir_path}: {error}") from None
        if ir.shape[:2] != vis.shape[:2]:
            raise StreamFuseError(
                f"{vis_path} is {vis.shape[1]}x{vis.shape[0]} but the calibration's vis_size is "
                f"{ir.shape[1]}x{ir.shape[0]}: use the calibration of this camera pair"
            )
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


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def fuse_registered(fuser, ir: np.ndarray, vis: np.ndarray, registrar: IrRegistrar | None
                    ) -> np.ndarray:
    """The fused image of a loaded pair; where the calibration leaves the IR camera's view, the
    visible image (as the pipeline does)."""
    fused = fuser.fuse(ir, vis)
    return fused if registrar is None else registrar.outside_view(fused, vis)


def run(args: argparse.Namespace) -> int:
    fusion = FusionConfig(rule=args.rule)
    if is_video(args.ir) or is_video(args.vis):
        return fuse_videos(args, fusion)
    if args.calibration is not None and args.resize:
        raise StreamFuseError("--calibration and --resize both bring IR to the visible frame: pass one")
    args.engine, args.precision = args.engine or "eager", args.precision or "fp32"
    if args.engine in ("eager", "compile"):
        keep_freed_memory()  # many full-size maps allocated per pair: see streamfuse.allocator
    for flag, path in (("--ir", args.ir), ("--vis", args.vis)):
        if not path.exists():
            raise StreamFuseError(f"{flag} {path}: no such image, folder or video")
    if args.ir.is_dir() != args.vis.is_dir():
        raise StreamFuseError(f"--ir {args.ir} and --vis {args.vis} must both be files or both be folders")
    registrar = None
    if args.calibration is not None:
        registrar = IrRegistrar(load_calibration(args.calibration))
    if not args.ir.is_dir():
        as_folder = args.output.is_dir() or not args.output.suffix
        output = args.output / f"{args.ir.stem}.png" if as_folder else args.output
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise StreamFuseError(f"-o {output}: a fused image is written as PNG (or "
                                  f"{', '.join(sorted(IMAGE_SUFFIXES - {'.png'}))}); name it e.g. fused.png")
        check_writable_file(output, "-o")
        fuser = create_fuser(args.weights, fusion, args.engine, args.precision, args.device)
        warn_if_false_colour(args.ir)
        ir, vis = load_pair(args.ir, args.vis, args.resize, registrar, args.gain)
        write_png(output, fuse_registered(fuser, ir, vis, registrar))
        print(f"wrote {output}")
        return 0
    return fuse_folders(args, fusion, registrar)


def fuse_folders(args: argparse.Namespace, fusion: FusionConfig,
                 registrar: IrRegistrar | None) -> int:
    pairs, unmatched = pair_files(args.ir, args.vis)
    if not pairs:
        if not unmatched:
            raise StreamFuseError(f"no pairs: {args.ir} and {args.vis} hold no images "
                                  f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        raise StreamFuseError(f"no pairs: no image stem is in both {args.ir} and {args.vis} "
                              f"({len(unmatched)} only in one; pairs are matched by file name)")
    if args.output.suffix.lower() in IMAGE_SUFFIXES and not args.output.is_dir():
        raise StreamFuseError(f"-o {args.output}: folders of pairs are fused into a folder "
                              f"(one <stem>.png each); name a folder, e.g. -o {args.output.with_suffix('')}")
    check_writable_folder(args.output, "-o")
    warn_if_false_colour(pairs[0][1])
    fuser = create_fuser(args.weights, fusion, args.engine, args.precision, args.device)
    failures = [f"{stem}: only in one of the two folders" for stem in unmatched]
    done = 0
    # Problems are listed once, at the end; the bar counts them so a long run shows them early.
    with tqdm(pairs, desc="fusing", unit="pair") as bar:
        for stem, ir_path, vis_path in bar:
            try:
                ir, vis = load_pair(ir_path, vis_path, args.resize, registrar, args.gain)
                write_png(args.output / f"{stem}.png", fuse_registered(fuser, ir, vis, registrar))
                done += 1
            except StreamFuseError as error:
                failures.append(str(error))
                bar.set_postfix(skipped=len(failures) - len(unmatched))
    print(f"fused {done} of {len(pairs)} pairs into {args.output}")
    if failures:
        print(f"streamfuse fuse: {len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


def fuse_videos(args: argparse.Namespace, fusion: FusionConfig) -> int:
    """Two video files -> one fused video, through the streaming pipeline (decode, pair by
    timestamp, register, fuse, H.264 encode), with its progress bar and its checks."""
    for flag, path in (("--ir", args.ir), ("--vis", args.vis)):
        if not is_video(path):
            raise StreamFuseError(
                f"{flag} {path} is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}): give two "
                "videos, two images or two folders"
            )
        if not path.is_file():
            raise StreamFuseError(f"{flag} {path}: no such video file")
    if not is_video(args.output):
        raise StreamFuseError(f"-o {args.output}: videos are fused into a video file, e.g. -o fused.mp4")
    if args.resize:
        raise StreamFuseError("--resize is for images; for videos of different sizes pass --calibration")
    check_writable_file(args.output, "-o")
    # The flags' own one-line errors, as for stills, before the pipeline's checks of its config.
    if args.weights is not None:
        check_checkpoint_exists(args.weights)
    if args.calibration is not None:
        load_calibration(args.calibration)
    config = PipelineConfig(
        ir=SourceConfig(kind="file", path=str(args.ir), gain=str(args.gain)),
        vis=SourceConfig(kind="file", path=str(args.vis), gain=str(args.gain)),
        calibration=str(args.calibration) if args.calibration is not None else None,
        inference=InferenceConfig(
            weights=str(args.weights) if args.weights is not None else None, fusion=fusion.rule,
            engine=args.engine or "auto", precision=args.precision or "auto", device=args.device,
        ),
        sinks=SinksConfig(video=VideoSinkConfig(path=str(args.output))),
    )
    # Messages about the pair as a whole (sizes that differ) name the two videos.
    pair_name = f"{args.ir} + {args.vis}"
    check_files(config, pair_name)
    handler = log_to_terminal("streamfuse fuse")
    try:
        result = run_pipeline(config, pair_name, progress=True)
    finally:
        logging.getLogger("streamfuse").removeHandler(handler)
    status = report(result)
    print(f"wrote {args.output}")
    return status
