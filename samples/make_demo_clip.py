"""Make the demo clip pair in samples/demo/ from one real aligned IR/visible image pair.

A virtual camera pans slowly across the pair and zooms in a little; the IR camera runs at
30 fps and the visible one at 25 fps (both see the same motion at their own frame times), so
`streamfuse run configs/demo.yaml` shows timestamp pairing as well as fusion. Both clips are
H.264 MP4s, gray.

    python samples/make_demo_clip.py                       # TNO pair 001, 3 s, 160x128
    python samples/make_demo_clip.py --data ../shared/data/tno --pair 001 --seconds 3
"""

from __future__ import annotations

import argparse
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data")) / "tno"


def view_transform(t: float, seconds: float, source_size: tuple[int, int],
                   out_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine map from source to output pixels at time ``t``: the view's centre moves from
    the left third to the right third of the image while its width shrinks from 80% to 60%,
    eased in and out (smoothstep) so the motion starts and stops gently."""
    width, height = source_size
    out_width, out_height = out_size
    s = t / seconds
    s = s * s * (3 - 2 * s)
    view_width = width * (0.8 - 0.2 * s)
    centre_x = width * (0.40 + 0.20 * s)
    centre_y = height * 0.5
    scale = out_width / view_width
    return np.array([[scale, 0, out_width / 2 - scale * centre_x],
                     [0, scale, out_height / 2 - scale * centre_y]])


def render(image: np.ndarray, t: float, seconds: float, out_size: tuple[int, int]) -> np.ndarray:
    """The virtual camera's frame ``(out_h, out_w)`` uint8 at time ``t``."""
    matrix = view_transform(t, seconds, (image.shape[1], image.shape[0]), out_size)
    return cv2.warpAffine(image, matrix, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def write_clip(path: Path, image: np.ndarray, fps: int, seconds: float, out_size: tuple[int, int], crf: int) -> None:
    # Halve the source first (area average) so the linear warp does not alias fine texture.
    source = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height = out_size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for index in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(render(source, index / fps, seconds, out_size), format="gray")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with ir/ and vis/ aligned pairs")
    parser.add_argument("--pair", default="001", help="file stem of the pair")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", default="160x128", help="output WIDTHxHEIGHT (even numbers)")
    parser.add_argument("--crf", type=int, default=20)
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "samples" / "demo")
    args = parser.parse_args()
    out_size = tuple(int(v) for v in args.size.split("x"))
    args.output.mkdir(parents=True, exist_ok=True)
    for side, fps in (("ir", 30), ("vis", 25)):
        source = next((args.data / side).glob(f"{args.pair}.*"))
        image = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
        path = args.output / f"{side}.mp4"
        write_clip(path, image, fps, args.seconds, out_size, args.crf)
        print(f"{path}: {fps} fps, {args.seconds} s, {out_size[0]}x{out_size[1]}, {path.stat().st_size / 1024:.0f} KiB (from {source})")


if __name__ == "__main__":
    main()
