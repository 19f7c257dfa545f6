"""`streamfuse record`: save the frames a `streamfuse run` publishes over ZeroMQ to a video file."""

from __future__ import annotations

import argparse
import threading

from tqdm import tqdm

from streamfuse.outputs import output_path
from streamfuse.pipeline.runner import stop_on_signals
from streamfuse.pipeline.sinks import VideoFileWriter, check_video_output
from streamfuse.pipeline.wire import DEFAULT_URL, subscribe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record", help="save a published fused stream to a video file",
        description="Subscribe to a ZeroMQ sink of `streamfuse run` and write its frames to a "
        "video file (PyAV), timed by the frames' timestamps. Ends when the run ends, after "
        "--frames or --timeout, or on Ctrl-C; the file is finalised in every case.",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"publisher endpoint (default {DEFAULT_URL})")
    parser.add_argument("-o", "--output", required=True, type=output_path, help="video file to write (e.g. out.mp4)")
    parser.add_argument("--fps", type=float, help="frame rate of the file (default: the stream's, else 30)")
    parser.add_argument("--codec", default="h264", help="FFmpeg encoder (default h264)")
    parser.add_argument("--crf", type=int, default=20, help="H.264/H.265 quality, lower is better (default 20)")
    parser.add_argument("--frames", type=int, help="stop after this many frames")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds without a frame")
    parser.add_argument("--hwm", type=int, default=64, help="frames ZeroMQ may queue for this reader (default 64)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The writer opens at the first frame (the stream gives its rate): a file name or codec it
    # cannot take must fail before the wait for a publisher, not after it.
    check_video_output(args.output, args.codec, setting="--")  # also proves the file can be written
    stop = threading.Event()
    writer: VideoFileWriter | None = None
    with tqdm(unit="frame", desc=f"recording {args.output.name}") as bar, stop_on_signals(stop):
        try:
            for header, frame in subscribe(args.url, args.timeout, args.hwm, stop=stop.is_set):
                if writer is None:
                    fps = args.fps or header.get("fps") or 30.0
                    writer = VideoFileWriter(args.output, fps, args.codec, args.crf, setting="--")
                writer.write(frame, header["time"])
                bar.update(1)
                if args.frames is not None and writer.written >= args.frames:
                    break
        finally:
            if writer is not None:
                writer.close()
    if writer is None:
        print(f"no frames received from {args.url}; nothing written")
        return 1
    print(f"wrote {writer.written} frames to {args.output}")
    return 0
