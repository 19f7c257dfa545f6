"""Reading calibration input: gray frames with timestamps from a video (PyAV), an image, or a
folder of images, and pairing IR with visible frames. The one place calibration reads media."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from streamfuse.errors import StreamFuseError
from streamfuse.gain import Gain, GainControl, counts_format
from streamfuse.images import IMAGE_SUFFIXES, read_image


# Smaller frames leave no room for the edge and gradient filters (as `streamfuse fuse` refuses).
MIN_SIDE = 8


def read_video_gray(path: str | Path, max_frames: int | None = None
                    ) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp in seconds from the container PTS, (H, W) uint8 gray frame) of the first
    video stream of ``path``, in presentation order (gray deeper than 8 bits through the
    automatic gain of :mod:`streamfuse.gain`). A recording corrupt part-way yields the
    frames before the damage, with a warning on stderr (as the pipeline keeps them)."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise StreamFuseError(f"{path}: cannot open video ({_reason(error)})") from None
    decoded = 0
    try:
        if not container.streams.video:
            raise StreamFuseError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        # Deep gray video (raw thermal counts) gets the pipeline's automatic gain.
        deep_format, full_scale = counts_format(stream.codec_context.pix_fmt or "")
        gain = GainControl(Gain(), full_scale)
        for index, frame in enumerate(container.decode(stream)):
            if max_frames is not None and index >= max_frames:
                break
            time = frame.time if frame.pts is not None else index / float(stream.average_rate)
            gray = (gain(frame.to_ndarray(format=deep_format), time) if deep_format
                    else frame.to_ndarray(format="gray"))
            _check_size(gray, path)
            decoded += 1
            yield float(time), gray
    except av.FFmpegError as error:
        if not decoded:
            raise StreamFuseError(f"{path}: cannot decode video ({_reason(error)})") from None
        tqdm.write(f"warning: {path}: corrupt after {decoded} frames ({_reason(error)}); "
                   f"using the {decoded} before it", file=sys.stderr)
    finally:
        container.close()


def _reason(error: Exception) -> str:
    """FFmpeg's message without its errno number and call name."""
    return getattr(error, "strerror", None) or str(error)


def _check_size(frame: np.ndarray, path: str | Path) -> None:
    if min(frame.shape[:2]) < MIN_SIDE:
        raise StreamFuseError(f"{path}: {frame.shape[1]}x{frame.shape[0]} is too small "
                              f"(need at least {MIN_SIDE}x{MIN_SIDE})")


def is_video(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES


def read_frames(path: str | Path, max_frames: int | None = None
                ) -> list[tuple[str | float, np.ndarray]]:
    """Frames of a video ((timestamp, frame) list), an image folder ((stem, frame), sorted by
    name) or one image ((stem, frame))."""
    path = Path(path)
    if not path.exists():
        raise StreamFuseError(f"{path}: not found: give an image, a folder of images or a video")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise StreamFuseError(f"{path}: folder holds no images ({suffixes})")
        return [(p.stem, _read_gray_image(p)) for p in files[:max_frames]]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [(path.stem, _read_gray_image(path))]
    return list(read_video_gray(path, max_frames))


def _read_gray_image(path: Path) -> np.ndarray:
    image = read_image(path, gray=True)
    _check_size(image, path)
    return image


def read_pairs(ir_path: str | Path, vis_path: str | Path, time_offset: float = 0.0,
               max_pairs: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(IR frame, visible frame) pairs from two sources of the same kind.

    Images: one image each, or two folders paired by file stem. Videos: each IR frame with the
    visible frame nearest to IR time + ``time_offset``, within half a visible frame interval;
    ``max_pairs`` spreads the pairs evenly over the recording.
    """
    ir_frames = read_frames(ir_path)
    vis_frames = read_frames(vis_path)
    if isinstance(ir_frames[0][0], str) != isinstance(vis_frames[0][0], str):
        raise StreamFuseError(f"{ir_path} and {vis_path}: give two videos, two images or two "
                              f"folders, not a mix")
    if isinstance(ir_frames[0][0], str):
        if len(ir_frames) == 1 and len(vis_frames) == 1:
            pairs = [(ir_frames[0][1], vis_frames[0][1])]
        else:
            by_stem = dict(vis_frames)
            pairs = [(frame, by_stem[stem]) for stem, frame in ir_frames if stem in by_stem]
    else:
        vis_times = np.array([t for t, _ in vis_frames])
        interval = float(np.median(np.diff(vis_times))) if len(vis_times) > 1 else 1.0
        pairs = []
        for time, frame in ir_frames:
            nearest = int(np.argmin(np.abs(vis_times - (time + time_offset))))
            if abs(vis_times[nearest] - (time + time_offset)) <= interval / 2:
                pairs.append((frame, vis_frames[nearest][1]))
    if not pairs:
        raise StreamFuseError(f"{ir_path} and {vis_path}: no IR frame has a visible partner "
                              f"(folders: same file names; videos: overlapping times)")
    if max_pairs is not None and len(pairs) > max_pairs:
        picks = np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)
        pairs = [pairs[i] for i in picks]
    return pairs
