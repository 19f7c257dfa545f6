"""`streamfuse calibrate`: estimate a camera pair's calibration file, or check one."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamfuse.calibration import (
    Calibration, load_calibration, save_calibration, today, warp_valid_mask,
)
from streamfuse.errors import StreamFuseError
from streamfuse.outputs import check_writable_file, output_path
from streamfuse.registration import auto, board, check, points, sync
from streamfuse.registration.frames import is_video, read_frames, read_pairs, read_video_gray


def _usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="estimate or check the IR->visible calibration of a camera pair",
        description="Estimate the IR->visible homography and/or time offset of a camera pair "
                    "and write the calibration YAML, or check an existing one.",
    )
    mode = parser.add_argument_group("mode (one of --points, --board, --auto, --check; "
                                     "--sync alone or with --board/--auto)")
    mode.add_argument("--points", metavar="CSV", help="correspondences ir_x,ir_y,vis_x,vis_y")
    mode.add_argument("--board", choices=board.BOARD_KINDS,
                      help="a board seen by both cameras (circles: symmetric grid, acircles: "
                           "asymmetric)")
    mode.add_argument("--auto", action="store_true", help="align a normal scene automatically")
    mode.add_argument("--sync", action="store_true", help="estimate the time offset")
    mode.add_argument("--check", metavar="CALIB", help="score CALIB on --ir/--vis frames")
    parser.add_argument("--ir", help="IR image, folder of images or video")
    parser.add_argument("--vis", help="visible image, folder of images or video")
    parser.add_argument("-o", "--output", type=output_path, metavar="YAML", help="calibration file to write")
    parser.add_argument("--pattern", help="board size COLSxROWS (inner corners or circles)")
    parser.add_argument("--spacing", type=float, default=1.0,
                        help="board square / circle spacing (any unit; only for --intrinsics)")
    parser.add_argument("--intrinsics", action="store_true",
                        help="with --board: also calibrate each camera (matrix, distortion)")
    parser.add_argument("--ir-size", help="with --points: IR frame WIDTHxHEIGHT")
    parser.add_argument("--vis-size", help="with --points: visible frame WIDTHxHEIGHT")
    parser.add_argument("--base", metavar="CALIB",
                        help="start from this calibration (--auto) or keep its homography "
                             "(--sync alone)")
    parser.add_argument("--max-pairs", type=int, default=30,
                        help="frame pairs used from videos/folders (default 30)")
    parser.add_argument("--min-confidence", type=float, default=auto.AutoSettings.min_confidence,
                        help="--auto refuses below this edge-orientation correlation")
    parser.add_argument("--min-agreement", type=float, default=auto.AutoSettings.min_agreement,
                        help="--auto refuses when fewer than this fraction of the registered "
                             "pair's structured patches agree with the fit on their own")
    parser.add_argument("--workers", type=int, default=_usable_cores(),
                        help="--auto: processes fitting frame pairs at once, or a single pair's "
                             "stages (default: one per CPU core, here %(default)s; 1: all in this "
                             "process); the result does not depend on it")
    parser.add_argument("--max-offset", type=float, help="--sync search range in seconds")
    parser.add_argument("--threshold", type=float, default=3.0,
                        help="--points: RANSAC outlier threshold in visible pixels")
    parser.add_argument("--overlay", type=output_path, metavar="PNG", help="--check: edge overlay image to write")
    parser.set_defaults(func=run)


def _size(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StreamFuseError(f"{option} must be WIDTHxHEIGHT, e.g. 640x512 (got {text!r})") \
            from None
    if width <= 0 or height <= 0:
        raise StreamFuseError(f"{option} must be positive (got {text!r})")
    return width, height


def _need(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise StreamFuseError(f"this mode needs --{name.replace('_', '-')}")


def run(args: argparse.Namespace) -> int:
    modes = [m for m in ("points", "board", "auto", "check") if getattr(args, m)]
    if len(modes) > 1 or (args.sync and modes and modes[0] in ("points", "check")):
        raise StreamFuseError(f"choose one mode, not {' and '.join('--' + m for m in modes)}")
    if not modes and not args.sync:
        raise StreamFuseError("choose a mode: --points, --board, --auto, --sync or --check")
    for flag, value in (("--max-pairs", args.max_pairs), ("--workers", args.workers)):
        if value < 1:
            raise StreamFuseError(f"{flag} {value}: must be at least 1")
    if args.check:
        if args.overlay:
            if Path(args.overlay).suffix.lower() != ".png":
                raise StreamFuseError(f"--overlay {args.overlay}: the overlay is a PNG image; "
                                      "name it e.g. overlay.png")
            check_writable_file(args.overlay, "--overlay")
        return _run_check(args)
    _need(args, "output")
    check_writable_file(args.output, "-o")
    if args.points:
        calibration = _run_points(args)
    else:
        _need(args, "ir", "vis")
        offset = _run_sync(args) if args.sync else None
        if args.board:
            calibration = _run_board(args, offset or 0.0)
        elif args.auto:
            calibration = _run_auto(args, offset or 0.0)
        else:
            calibration = _sync_only(args, offset)
        if offset is not None:
            calibration.time_offset = offset
            calibration.method = "sync" if calibration.method == "identity" else \
                f"{calibration.method}+sync"
    save_calibration(calibration, args.output)
    print(f"wrote {args.output} (method {calibration.method}, residual "
          f"{calibration.residual_px:.3f} px, time offset {calibration.time_offset:+.4f} s)")
    return 0


def _run_points(args: argparse.Namespace) -> Calibration:
    ir_size, vis_size = _size(args.ir_size, "--ir-size"), _size(args.vis_size, "--vis-size")
    if ir_size is None and args.ir:
        frame = read_frames(args.ir, max_frames=1)[0][1]
        ir_size = (frame.shape[1], frame.shape[0])
    if vis_size is None and args.vis:
        frame = read_frames(args.vis, max_frames=1)[0][1]
        vis_size = (frame.shape[1], frame.shape[0])
    if ir_size is None or vis_size is None:
        raise StreamFuseError("--points needs the frame sizes: --ir-size and --vis-size "
                              "(or --ir and --vis images)")
    ir_points, vis_points = points.read_points_csv(args.points)
    points.check_inside(ir_points, ir_size, "IR", "--ir-size", args.points)
    points.check_inside(vis_points, vis_size, "visible", "--vis-size", args.points)
    fit = points.fit_points(ir_points, vis_points, args.threshold, source=args.points)
    print("point  ir_x      ir_y      vis_x     vis_y     error_px")
    for index, (ir, vis, error, inlier) in enumerate(
            zip(ir_points, vis_points, fit.errors, fit.inliers), start=1):
        flag = "" if inlier else "  OUTLIER"
        print(f"{index:5d}  {ir[0]:8.2f}  {ir[1]:8.2f}  {vis[0]:8.2f}  {vis[1]:8.2f}  "
              f"{error:8.3f}{flag}")
    print(f"{int(fit.inliers.sum())} of {len(ir_points)} points agree; RMS {fit.rms_px:.3f} px")
    return Calibration(ir_size=ir_size, vis_size=vis_size, homography=fit.homography,
                       method="points", residual_px=fit.rms_px, date=today(),
                       notes=f"{int(fit.inliers.sum())}/{len(ir_points)} points from "
                             f"{Path(args.points).name}")


def _pattern(args: argparse.Namespace) -> tuple[int, int]:
    if args.pattern is None:
        raise StreamFuseError("--board needs --pattern COLSxROWS (inner corners of a "
                              "chessboard, circles of a grid), e.g. --pattern 9x6")
    columns, rows = _size(args.pattern, "--pattern")
    return columns, rows


def _run_board(args: argparse.Namespace, offset: float) -> Calibration:
    pattern = _pattern(args)
    pairs = read_pairs(args.ir, args.vis, offset, args.max_pairs)
    with tqdm(total=len(pairs), desc="board", unit="pair", leave=False) as bar:
        result = board.calibrate_board(pairs, args.board, pattern, args.intrinsics,
                                       args.spacing, progress=bar.update)
    fit = result.fit
    print(f"board found in {result.views} of {len(pairs)} frame pairs; "
          f"{int(fit.inliers.sum())} of {len(fit.errors)} corners agree; "
          f"RMS {fit.rms_px:.3f} px, worst {fit.errors.max():.3f} px")
    if result.ir_camera is not None:
        print(f"intrinsics: IR reprojection RMS {result.ir_rms_px:.3f} px, visible "
              f"{result.vis_rms_px:.3f} px")
    ir_size = (pairs[0][0].shape[1], pairs[0][0].shape[0])
    vis_size = (pairs[0][1].shape[1], pairs[0][1].shape[0])
    return Calibration(ir_size=ir_size, vis_size=vis_size, homography=fit.homography,
                       ir_camera=result.ir_camera, vis_camera=result.vis_camera,
                       method="board", residual_px=fit.rms_px, date=today(),
                       notes=f"{args.board} {pattern[0]}x{pattern[1]}, {result.views} views")


def _not_blank(args: argparse.Namespace, pairs: list[tuple[np.ndarray, np.ndarray]],
               consequence: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs in which neither frame is blank; when none is left, an error naming the files
    and the side that is blank."""
    kept = [(ir, vis) for ir, vis in pairs if not (auto.is_blank(ir) or auto.is_blank(vis))]
    if kept:
        return kept
    blank_ir = any(auto.is_blank(ir) for ir, _ in pairs)
    blank_vis = any(auto.is_blank(vis) for _, vis in pairs)
    side = ("the IR and the visible frames are" if blank_ir and blank_vis
            else "the IR frame is" if blank_ir else "the visible frame is")
    raise StreamFuseError(f"--ir {args.ir} / --vis {args.vis}: in {auto.all_pairs(len(pairs))} "
                          f"{side} blank (one uniform gray): {consequence}; use frames in which "
                          "both cameras see the scene")


def _run_auto(args: argparse.Namespace, offset: float) -> Calibration:
    pairs = read_pairs(args.ir, args.vis, offset, args.max_pairs)
    _not_blank(args, pairs, "no file written")
    ir_frames = [ir for ir, _ in pairs]
    vis_frames = [vis for _, vis in pairs]
    ir_size = (ir_frames[0].shape[1], ir_frames[0].shape[0])
    vis_size = (vis_frames[0].shape[1], vis_frames[0].shape[0])
    initial = None
    if args.base:
        base = load_calibration(args.base)
        if base.ir_size != ir_size or base.vis_size != vis_size:
            raise StreamFuseError(f"{args.base}: sizes {base.ir_size}/{base.vis_size} do not "
                                  f"match the frames {ir_size}/{vis_size}")
        initial = base.homography
    settings = auto.AutoSettings(min_confidence=args.min_confidence,
                                 min_agreement=args.min_agreement)
    with tqdm(total=len(pairs), desc="auto", unit="pair", leave=False) as bar:
        result = auto.register_frames(ir_frames, vis_frames, initial, settings=settings,
                                      progress=bar.update, workers=args.workers)
    left_out = (f", {result.ambiguous_frames} left out (scene matches at several places)"
                if result.ambiguous_frames else "")
    frame_pairs = f"{result.frames_used} frame pair{'s' if result.frames_used != 1 else ''}"
    if result.fit_size is not None:
        frame_pairs += (f" (visible frames reduced to {result.fit_size[0]}x{result.fit_size[1]}, "
                        f"the IR frame's detail)")
    print(f"{frame_pairs}{left_out}: edge-orientation correlation "
          f"{result.start_confidence:.3f} at the start, {result.confidence:.3f} registered "
          f"({result.model}); {result.agreeing_patches} of {result.structured_patches} "
          f"structured patches agree; residual {result.residual_px:.3f} px "
          f"({result.residual_basis})")
    auto.check_reliable(result, settings)
    warning = auto.residual_warning(result, settings)
    if warning:
        print(f"warning: {warning}; look at the edge overlay of `streamfuse calibrate --check "
              f"{args.output} --ir {args.ir} --vis {args.vis} --overlay overlay.png`, or "
              f"calibrate over a clip of varied scenes or with --points or --board",
              file=sys.stderr)
    return Calibration(ir_size=ir_size, vis_size=vis_size, homography=result.homography,
                       method="auto", residual_px=result.residual_px, date=today(),
                       notes=f"orientation ECC on {frame_pairs}, confidence "
                             f"{result.confidence:.3f} ({result.model}), "
                             f"{result.agreement:.0%} of patches agree; residual: "
                             f"{result.residual_basis}")


def _run_sync(args: argparse.Namespace) -> float:
    for flag, path in (("--ir", args.ir), ("--vis", args.vis)):
        if path is not None and not Path(path).exists():
            raise StreamFuseError(f"{flag} {path}: no such video file")
    if not (is_video(args.ir) and is_video(args.vis)):
        raise StreamFuseError("--sync needs two recordings: give videos to --ir and --vis")
    ir_times, ir_frames = _video(args.ir)
    vis_times, vis_frames = _video(args.vis)
    result = sync.estimate_offset(ir_times, ir_frames, vis_times, vis_frames, args.max_offset,
                                  ir_name=f"--ir {args.ir}", vis_name=f"--vis {args.vis}")
    print(f"time offset {result.offset_s:+.4f} s (IR + offset = visible), motion correlation "
          f"{result.correlation:.3f}; frozen frames left out: IR {result.frozen_ir}, visible "
          f"{result.frozen_vis}")
    return result.offset_s


def _video(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
    times, frames = [], []
    for time, frame in tqdm(read_video_gray(path), desc=Path(path).name, unit="frame",
                            leave=False):
        times.append(time)
        frames.append(frame)
    return np.array(times), frames


def _sync_only(args: argparse.Namespace, offset: float | None) -> Calibration:
    if args.base:
        calibration = load_calibration(args.base)
    else:
        ir = read_frames(args.ir, max_frames=1)[0][1]
        vis = read_frames(args.vis, max_frames=1)[0][1]
        if ir.shape != vis.shape:
            raise StreamFuseError("--sync alone keeps an identity homography, which needs equal "
                                  "frame sizes: give --base CALIB with the homography")
        calibration = Calibration.identity(ir.shape[1], ir.shape[0])
    calibration.date = today()
    calibration.residual_px = calibration.residual_px or 0.0
    return calibration


def _run_check(args: argparse.Namespace) -> int:
    _need(args, "ir", "vis")
    calibration = load_calibration(args.check)
    pairs = read_pairs(args.ir, args.vis, calibration.time_offset, args.max_pairs)
    try:
        for ir_frame, vis_frame in pairs:
            check.check_sizes(calibration, ir_frame, vis_frame)
    except StreamFuseError as error:
        raise StreamFuseError(f"{args.check} on --ir {args.ir} / --vis {args.vis}: {error}") from None
    # A uniform frame (lens cap, a camera still starting) has no edge: its score would read as
    # "not aligned" when there is nothing to judge.
    scored = _not_blank(args, pairs, "nothing to score")
    befores, afters = [], []
    for ir_frame, vis_frame in scored:
        before, after, stretched, registered = check.check_scores(calibration, ir_frame, vis_frame)
        befores.append(before)
        afters.append(after)
    left_out = f" ({len(pairs) - len(scored)} blank left out)" if len(scored) < len(pairs) else ""
    print(f"gradient correlation over {len(scored)} frame pairs{left_out}: before "
          f"{np.median(befores):.3f}, after {np.median(afters):.3f} (1 = same edges; higher "
          "is better aligned)")
    if args.overlay:
        check.write_overlay(args.overlay, stretched, registered, scored[-1][1],
                            warp_valid_mask(calibration))
        print(f"wrote {args.overlay} (IR edges in red over the visible frame; the IR camera's "
              "view outlined in yellow where it does not cover the frame)")
    return 0
