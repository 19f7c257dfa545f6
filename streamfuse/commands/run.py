"""`streamfuse run`: run a streaming pipeline (sources -> fusion -> sinks) from a YAML config."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm import tqdm

from streamfuse.errors import StreamFuseError
from streamfuse.outputs import check_writable_file, output_path
from streamfuse.pipeline.config import load_pipeline_config
from streamfuse.pipeline.runner import RunResult, run_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="fuse paired IR/visible streams as a YAML config describes",
        description="Run the streaming pipeline: two sources (video files, cameras/URLs, image "
        "folders, ZeroMQ) are paired by timestamp, registered, fused and sent to the sinks "
        "(video file, image folder, ZeroMQ, display). Ctrl-C finishes the frames in flight and "
        "closes every output. Example: streamfuse run configs/demo.yaml",
    )
    parser.add_argument("config", type=Path, help="pipeline YAML (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="override a config key, e.g. inference.batch_size=4 or sinks.video.path=out.mp4")
    parser.add_argument("--stats", type=output_path, metavar="FILE", help="write a JSON summary (fps per stage, latency, queues, drops) at exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


class TqdmHandler(logging.Handler):
    """Log lines that do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def log_to_terminal(prefix: str) -> logging.Handler:
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    logger = logging.getLogger("streamfuse")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def write_stats(path: Path, summary: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.stats:
        check_writable_file(args.stats, "--stats")
    handler = log_to_terminal("streamfuse run")
    try:
        config = load_pipeline_config(args.config, args.overrides)
        result = run_pipeline(config, str(args.config), progress=not args.no_progress)
    finally:
        logging.getLogger("streamfuse").removeHandler(handler)
    if args.stats:
        write_stats(args.stats, result.summary)
    return report(result)


def report(result: RunResult) -> int:
    """Prints what a finished run did; its first error (if any) is raised as a one-line error."""
    summary = result.summary
    infer = summary["stages"]["infer"]
    print(f"fused {summary['frames_written']} frames in {summary['duration_s']:.1f} s "
          f"({summary['stages']['sink']['fps']:.1f} fps end to end, inference {infer['busy_fps'] or 0:.1f} fps)"
          + (" - stopped early" if result.interrupted else ""))
    if result.errors:
        more = f" ({len(result.errors) - 1} more in --stats)" if len(result.errors) > 1 else ""
        raise StreamFuseError(result.errors[0] + more)
    return 0
