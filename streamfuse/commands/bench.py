"""`streamfuse bench`: pairs per second and latency of the engines against the authors' baseline."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from tqdm import tqdm

from streamfuse.bench import (
    Bench,
    BenchConfig,
    format_table,
    parse_batch_sizes,
    parse_names,
    parse_resolutions,
)
from streamfuse.checkpoint import load_checkpoint
from streamfuse.engines import ENGINES, PRECISIONS, engine_available, resolve_device
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import DEFAULT_WEIGHTS, REPO_ROOT
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse
from streamfuse.outputs import check_writable_file, output_path

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def default_engines(device: str) -> str:
    candidates = ("eager", "compile", "tensorrt") if device.startswith("cuda") else ("eager", "compile", "openvino")
    return ",".join(e for e in candidates if engine_available(e))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure fused pairs/s of the engines against the authors' baseline",
        description="Time the whole fusion path for each resolution, engine, precision and batch "
        "size after warm-up, next to the baseline measured in the same process (one pair at a "
        "time, fp32 eager, BatchNorm not folded, rule sum). Prints a table and writes JSON "
        "(default bench/results/DATE-DEVICE.json).",
    )
    parser.add_argument("--resolutions", default="640x512,1280x1024", help="WIDTHxHEIGHT list (default 640x512,1280x1024)")
    parser.add_argument("--engines", help="comma list of " + ", ".join(ENGINES) + " (default: those installed for the device)")
    parser.add_argument("--precisions", help="comma list of fp32, bf16, fp16, int8 (openvino) (default fp32,bf16,int8 on CPU, "
                        "fp32,fp16 on CUDA)")
    parser.add_argument("--batch-sizes", default="1", help="comma list of pairs per call (default 1)")
    parser.add_argument("--rule", default=FusionConfig.rule, help=f"fusion rule (default {FusionConfig.rule})")
    parser.add_argument("--weights", type=Path,
                        help="checkpoint (default: the shipped weights; random weights of the same "
                        "shape when they are missing, which time the same)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, help="torch (and OpenVINO) CPU threads (default: torch's choice)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per measurement after warm-up (default 10)")
    parser.add_argument("--min-iterations", type=int, default=5, help="calls timed at least (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--no-fusion-share", action="store_true", help="skip timing each engine with rule sum (fusion layer share)")
    parser.add_argument("--cache-dir", type=Path, help="engine cache folder (default ~/.cache/streamfuse)")
    parser.add_argument("-o", "--output", type=output_path, help="JSON file to write (a .txt table is written beside it)")
    parser.set_defaults(func=run)


def load_model(weights: Path | None) -> tuple[DIDFuse, str]:
    """The network to time and a description of its weights."""
    if weights is not None:
        return load_checkpoint(weights)[0], str(weights)
    if DEFAULT_WEIGHTS.is_file():
        return load_checkpoint(DEFAULT_WEIGHTS)[0], str(DEFAULT_WEIGHTS)
    torch.manual_seed(0)
    return DIDFuse().eval(), "random (shipped weights missing; same shapes, same work)"


def default_output(device: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return RESULTS_DIR / f"{stamp}-{re.sub(r'[^a-z0-9]+', '', device.lower())}.json"


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise StreamFuseError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    for flag, value, least in (("--seconds", args.seconds, 0), ("--warmup", args.warmup, 0),
                               ("--min-iterations", args.min_iterations, 1)):
        if value < least:
            raise StreamFuseError(f"{flag} {value:g}: must be at least {least:g}")
    resolve_device(args.device)  # a device this machine lacks fails here, before the progress bar
    output = check_writable_file(args.output or default_output(args.device), "-o")
    on_cuda = args.device.startswith("cuda")
    config = BenchConfig(
        resolutions=parse_resolutions(args.resolutions),
        engines=parse_names(args.engines or default_engines(args.device), ENGINES, "--engines"),
        precisions=parse_names(args.precisions or ("fp32,fp16" if on_cuda else "fp32,bf16,int8"), PRECISIONS, "--precisions"),
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        rule=FusionConfig(rule=args.rule).rule,
        device=args.device,
        warmup=args.warmup,
        min_iterations=args.min_iterations,
        seconds=args.seconds,
        fusion_share=not args.no_fusion_share,
        cache_dir=str(args.cache_dir) if args.cache_dir else None,
    )
    model, weights = load_model(args.weights)
    total = len(config.resolutions) * len(config.engines) * len(config.precisions) * len(config.batch_sizes)
    with tqdm(total=total, desc="bench", unit="config") as bar:
        bench = Bench(model, config, progress=tqdm.write, advance=bar.update)
        result = bench.run()
    result["weights"] = weights
    table = format_table(result)
    print(table)
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".txt").write_text(table + "\n")
    print(f"wrote {output} and {output.with_suffix('.txt')}")
    return 0
