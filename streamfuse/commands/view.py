"""`streamfuse view`: show the frames a `streamfuse run` publishes over ZeroMQ in a window."""

from __future__ import annotations

import argparse
import threading

import cv2

from streamfuse.errors import StreamFuseError
from streamfuse.pipeline.runner import stop_on_signals
from streamfuse.pipeline.sinks import RateMeter, display_available, draw_fps, to_bgr
from streamfuse.pipeline.wire import DEFAULT_URL, subscribe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view", help="show a published fused stream in a window",
        description="Subscribe to a ZeroMQ sink of `streamfuse run` and show its frames with the "
        "received frame rate. q, Esc or Ctrl-C closes the window.",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"publisher endpoint (default {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds without a frame")
    parser.add_argument("--window", default="StreamFuse", help="window title")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not display_available():
        raise StreamFuseError("no display (DISPLAY/WAYLAND_DISPLAY unset): run `streamfuse view` on a desktop, "
                              "or save the stream with `streamfuse record URL -o FILE`")
    stop = threading.Event()
    rate = RateMeter()
    cv2.namedWindow(args.window, cv2.WINDOW_NORMAL)
    try:
        with stop_on_signals(stop):
            for _, frame in subscribe(args.url, args.timeout, stop=stop.is_set):
                image = draw_fps(to_bgr(frame).copy(), rate.tick())
                cv2.imshow(args.window, image)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27) or cv2.getWindowProperty(args.window, cv2.WND_PROP_VISIBLE) < 1:
                    break
    finally:
        cv2.destroyWindow(args.window)
        cv2.waitKey(1)
    return 0
