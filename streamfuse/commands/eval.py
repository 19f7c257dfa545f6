"""`streamfuse eval`: the paper's metrics for each fusion rule (and baselines) on a data folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamfuse.allocator import keep_freed_memory
from streamfuse.evaluate import BASELINES, evaluate_folder, parse_methods
from streamfuse.fusion import FusionConfig
from streamfuse.outputs import check_writable_file, output_path

DEFAULT_METHODS = f"{FusionConfig.rule},{','.join(BASELINES)}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="score fusion rules on a folder of pairs (paper's Table III layout)",
        description="Fuse every pair of DATA (ir/ and vis/, matched by stem) with each rule and "
        "print EN, SD, SF, VIF, AG, SCD, MI, Qabf, SSIM, PSNR as mean ± std per rule. "
        f"Baselines: {', '.join(BASELINES)}.",
    )
    parser.add_argument("--data", required=True, type=Path, help="folder with ir/ and vis/")
    parser.add_argument("--rules", help=f"comma-separated rules and baselines (default {DEFAULT_METHODS}; "
                        "none when only --fused is given)")
    parser.add_argument("--weights", type=Path, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--fused", type=Path, help="also score already fused images in this folder (named by stem)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--csv", type=output_path, help="write the table as CSV")
    parser.add_argument("--json", type=output_path, help="write the table and per-pair scores as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()  # every pair is fused with eager PyTorch: see streamfuse.allocator
    for flag, path in (("--csv", args.csv), ("--json", args.json)):
        if path is not None:
            check_writable_file(path, flag)
    methods_text = args.rules if args.rules is not None else ("" if args.fused else DEFAULT_METHODS)
    result = evaluate_folder(args.data, parse_methods(methods_text), args.weights, args.fused, args.device)
    print(result.table())
    if args.csv:
        result.write_csv(args.csv)
    if args.json:
        result.write_json(args.json)
    if result.skipped:
        print(f"streamfuse eval: {len(result.skipped)} pair(s) left out:", file=sys.stderr)
        for problem in result.skipped:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0
