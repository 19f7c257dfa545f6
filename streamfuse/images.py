"""Image files: reading with clear errors, pairing IR and visible files by stem, writing PNGs."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import StreamFuseError
from streamfuse.gain import Gain, to_8bit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def read_image(path: str | Path, gray: bool = False, gain: Gain = Gain()) -> np.ndarray:
    """8-bit image ``(H, W)`` (gray) or ``(H, W, 3)`` BGR; gray-looking colour files stay 3-channel
    unless ``gray``. 16-bit files (raw thermal counts) become 8-bit by ``gain``
    (:mod:`streamfuse.gain`; by default the image's own percentile window)."""
    return to_8bit(read_image_counts(path, gray), gain)


def read_image_counts(path: str | Path, gray: bool = False) -> np.ndarray:
    """:func:`read_image` before gain: uint8, or uint16 for a 16-bit file."""
    path = Path(path)
    if not path.is_file():
        raise StreamFuseError(f"{path}: no such image file")
    # ANYDEPTH keeps 16-bit counts through the gray conversion (OpenCV would divide them by 256).
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH if gray else cv2.IMREAD_UNCHANGED
    with quiet_opencv():  # a broken file makes the decoder log lines beside our one-line error
        image = cv2.imread(str(path), flags)
    if image is None:
        raise StreamFuseError(f"{path}: cannot decode the image (corrupt or unsupported format)")
    if image.dtype not in (np.uint8, np.uint16):
        fix = (": a radiometric export of temperatures? save the camera's raw counts as 16-bit "
               "PNG/TIFF instead" if image.dtype.kind == "f" else "")
        raise StreamFuseError(f"{path}: unsupported pixel type {image.dtype} (need 8 or 16-bit "
                              f"integers){fix}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


# Mean distance of a frame's chroma from neutral gray (YCrCb levels, both channels) above which
# an IR frame is taken for a false-colour palette; gray video through 4:2:0 H.264 stays under 1.
PALETTE_CHROMA = 8.0


def is_false_colour(image: np.ndarray) -> bool:
    """Whether an 8-bit BGR frame ``(H, W, 3)`` is coloured throughout, as a thermal camera's
    false-colour palette (ironbow, rainbow) makes it; gray frames are not."""
    if image.ndim != 3 or image.dtype != np.uint8:
        return False
    ycrcb = cv2.cvtColor(np.ascontiguousarray(image[::4, ::4]), cv2.COLOR_BGR2YCrCb).astype(np.int16)
    return float(np.abs(ycrcb[:, :, 1:] - 128).sum(axis=2).mean()) > PALETTE_CHROMA


def false_colour_warning(where: str) -> str:
    """The warning for IR frames in a false-colour palette, which are fused as their brightness."""
    return (f"{where}: the IR frames are in colour (a false-colour palette?); they are fused as "
            "their brightness, which a palette need not make follow temperature: switch the "
            "camera to a gray palette (white-hot) if you can")


class _QuietOpenCV:
    """OpenCV's own log off for calls whose failures we report ourselves: a missing camera makes
    each capture backend print several lines per attempt, a corrupt image its decoder. The level
    is one process-wide setting and capture threads call at the same time: the first call to
    start turns it off and the last to finish restores it (each saving and restoring its own
    left it on during the other's call, then off for good)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._level_before = None

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._active == 0:
                self._level_before = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    cv2.utils.logging.setLogLevel(self._level_before)


quiet_opencv = _QuietOpenCV()


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` where ``path`` says (PNG, or another format its suffix names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error:  # OpenCV raises for a suffix it has no writer for
        raise StreamFuseError(f"{path}: no image format ends in {path.suffix or '(nothing)'!r}; "
                              "name it .png") from None
    if not written:
        raise StreamFuseError(f"{path}: could not write the image (is the folder writable?)")
    return path


def read_aligned_pair(ir_path: Path, vis_path: Path, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """Two ``(H, W)`` gray images of one size (pixel for pixel aligned); ``purpose`` ends the
    message for two sizes ("training", "scoring")."""
    ir, vis = read_image(ir_path, gray=True), read_image(vis_path, gray=True)
    if ir.shape != vis.shape:
        raise StreamFuseError(f"{ir_path} is {ir.shape[1]}x{ir.shape[0]} but {vis_path} is "
                              f"{vis.shape[1]}x{vis.shape[0]}: {purpose} needs aligned pairs of one size")
    return ir, vis


def image_files(folder: str | Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StreamFuseError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise StreamFuseError(f"{folder}: two images share the stem {path.stem!r}: {by_stem[path.stem].name}, {path.name}")
        by_stem[path.stem] = path
    return by_stem


def pair_files(ir_folder: str | Path, vis_folder: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pairs ``(stem, ir_path, vis_path)`` matched by file stem, and the stems found on one side only."""
    ir_files, vis_files = image_files(ir_folder), image_files(vis_folder)
    stems = sorted(set(ir_files) & set(vis_files))
    unmatched = sorted(set(ir_files) ^ set(vis_files))
    return [(stem, ir_files[stem], vis_files[stem]) for stem in stems], unmatched


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` window of an image at least that large."""
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]
