"""Helpers for the pipeline tests: synthetic moving scenes, real PyAV encode/decode, configs,
the nearest-partner pairing reference and a small random checkpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import yaml

from streamfuse.checkpoint import save_checkpoint
from streamfuse.model import DIDFuse, DIDFuseConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 48, 64


def ir_scene(t: float, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``(H, W)`` uint8 thermal-like frame at world time ``t``: warm bars sliding right at 90 px/s
    and a hot spot circling, over a vertical gradient (every frame differs from its neighbours)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = 40 + 60 * y / height
    image = np.where(((x - 90 * t) % 16) < 5, 200.0, image)
    cx, cy = width / 2 + 18 * np.cos(3 * t), height / 2 + 12 * np.sin(3 * t)
    image = image + 150 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 30)
    return np.clip(image, 0, 255).astype(np.uint8)


def vis_scene(t: float, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``(H, W, 3)`` BGR frame at world time ``t``: a coloured checkerboard sliding left and
    down, distinct from :func:`ir_scene`."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    checker = (((x + 70 * t) // 8 + (y + 20 * t) // 8) % 2).astype(np.float64)
    blue = 60 + 150 * checker
    green = 50 + 120 * x / width
    red = 200 - 120 * checker * y / height
    return np.clip(np.dstack([blue, green, red]), 0, 255).astype(np.uint8)


def write_video(path: Path, streams: list[tuple[list[np.ndarray], float]], codec: str = "h264",
                pix_fmt: str = "yuv420p") -> Path:
    """Encode one or more ``(frames, fps)`` video streams into one file with PyAV, frame ``i``
    of a stream at PTS ``i / fps``. Frames are ``(H, W)`` gray or ``(H, W, 3)`` BGR uint8, or
    ``(H, W)`` uint16 counts for a deep gray ``pix_fmt``."""
    with av.open(str(path), "w") as container:
        outputs = []
        for frames, fps in streams:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = pix_fmt
            outputs.append(stream)
        order = sorted((i / fps, k, i) for k, (frames, fps) in enumerate(streams) for i in range(len(frames)))
        for _, k, i in order:
            image = streams[k][0][i]
            # uint16 frames are counts in the stream's own deep gray format (gray16le, gray12le).
            frame_format = pix_fmt if image.dtype == np.uint16 else "gray" if image.ndim == 2 else "bgr24"
            frame = av.VideoFrame.from_ndarray(image, format=frame_format)
            frame.pts = i
            frame.time_base = 1 / Fraction(streams[k][1]).limit_denominator(1001)
            container.mux(outputs[k].encode(frame))
        for stream in outputs:
            container.mux(stream.encode(None))
    return path


def decode_video(path: Path, stream: int = 0, fmt: str = "gray") -> tuple[list[float], list[np.ndarray]]:
    """Every frame of one video stream as PyAV decodes it: (timestamps in s, images)."""
    times, images = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[stream]):
            times.append(float(frame.time))
            images.append(frame.to_ndarray(format=fmt))
    return times, images


def reference_pairs(ir_times, vis_times, offset: float, tolerance: float) -> list[tuple[int, int]]:
    """The pairing definition over whole streams: each frame of the slower stream with its
    nearest frame of the other (IR time + offset = visible time), kept within ``tolerance``."""
    ir_times = np.asarray(ir_times) + offset
    vis_times = np.asarray(vis_times)
    pairs = []
    if np.median(np.diff(ir_times)) >= np.median(np.diff(vis_times)):  # IR is the slower stream
        for i, t in enumerate(ir_times):
            j = int(np.argmin(np.abs(vis_times - t)))
            if abs(vis_times[j] - t) <= tolerance:
                pairs.append((i, j))
    else:
        for j, t in enumerate(vis_times):
            i = int(np.argmin(np.abs(ir_times - t)))
            if abs(ir_times[i] - t) <= tolerance:
                pairs.append((i, j))
    return pairs


def make_weights(path: Path, features: int = 8, seed: int = 0) -> Path:
    """A randomly initialised checkpoint (``features`` wide, to keep CPU tests fast)."""
    torch.manual_seed(seed)
    return save_checkpoint(DIDFuse(DIDFuseConfig(features=features)), path)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_tcp_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def python_process(code_or_args: list[str], **kwargs) -> subprocess.Popen:
    """A separate Python process running from the repository root (``-c CODE`` or ``-m ...``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, *code_or_args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
