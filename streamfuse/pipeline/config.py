"""The YAML file that describes a pipeline run, as dataclasses (loaded by `streamfuse run`).

Paths are relative to the directory `streamfuse` runs in. Every key, its type and its default
are below; :func:`load_pipeline_config` validates the whole file before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streamfuse.config import load_yaml
from streamfuse.errors import StreamFuseError
from streamfuse.engines import ENGINES, PRECISIONS
from streamfuse.fuser import DEFAULT_WEIGHTS
from streamfuse.fusion import RULES
from streamfuse.gain import Gain
from streamfuse.pipeline.wire import DEFAULT_URL

SOURCE_KINDS = ("file", "camera", "folder", "zmq")


@dataclass
class SourceConfig:
    """One camera's input.

    kind: ``file`` (any video PyAV/FFmpeg reads), ``camera`` (OpenCV VideoCapture: device index,
        ``/dev/videoN``, or an RTSP/HTTP URL), ``folder`` (images played at ``fps``), ``zmq``
        (frames from another process in the StreamFuse wire format).
    path: the video file (``file``) or image folder (``folder``).
    stream: which video stream of the file, 0-based (a file holding both cameras: IR ``stream: 0``,
        visible ``stream: 1``).
    uri: ``camera``: ``0``, ``/dev/video2``, ``rtsp://...``; ``zmq``: the endpoint to connect to.
    fps: frame rate: required for ``folder``; for ``camera``/``zmq`` the nominal rate (default:
        what the device reports, else 30).
    color: ``auto`` (IR read as gray; visible kept in colour unless the stream is gray),
        ``gray`` or ``bgr``.
    realtime: ``file``/``folder``: read no faster than the frame rate (replay a recording as if
        it were live).
    reconnect_delay_s, reconnect_max_s: live sources that fail are reopened after a delay that
        doubles from the first value up to the second.
    open_timeout_s: ``camera``: a camera that has not given its first frame this many seconds
        after the start is an error (a wrong index or URL), None waits for ever; a URL's open
        is bounded by the time left (FFmpeg's open timeout), so a server that never answers
        cannot hold it longer. Once it has delivered, a lost camera is reopened for as long as
        the run lasts, unless
    lost_timeout_s: ``camera``: a camera that has given no frame for this many seconds ends the
        run with an error (frames fused before are kept); None (default) reopens it for ever,
        as unattended surveillance wants.
    gain: ``file``/``folder``: how frames deeper than 8 bits (raw thermal counts: 16-bit images,
        ``gray16le``/``gray12le`` video) become 8-bit (:mod:`streamfuse.gain`): ``auto`` (the
        frame's 0.5-99.5 percentile window, smoothed over 0.5 s), ``full`` (the format's whole
        range) or ``[LOW, HIGH]``, a fixed window of counts. 8-bit frames are never changed.
    """

    kind: Literal["file", "camera", "folder", "zmq"] = "file"
    path: str | None = None
    stream: int = 0
    uri: str | None = None
    fps: float | None = None
    color: Literal["auto", "gray", "bgr"] = "auto"
    realtime: bool = False
    reconnect_delay_s: float = 0.5
    reconnect_max_s: float = 10.0
    open_timeout_s: float | None = 30.0
    lost_timeout_s: float | None = None
    gain: str | list[int] = "auto"

    def __post_init__(self) -> None:
        try:
            self.parsed_gain()
        except StreamFuseError as error:
            raise ValueError(str(error)) from None
        needs = {"file": "path", "folder": "path", "camera": "uri", "zmq": "uri"}[self.kind]
        if getattr(self, needs) is None:
            what = {"file": "the video file", "folder": "the image folder",
                    "camera": "a device index, /dev/videoN or an rtsp:// URL",
                    "zmq": "an endpoint such as tcp://127.0.0.1:5556"}[self.kind]
            raise ValueError(f"'{needs}' is required for kind '{self.kind}' ({what})")
        if self.kind == "folder" and self.fps is None:
            raise ValueError("'fps' is required for kind 'folder' (the rate the images are played at)")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"'fps' must be positive, got {self.fps}")
        if self.stream < 0:
            raise ValueError(f"'stream' must be >= 0, got {self.stream}")
        if self.reconnect_delay_s <= 0 or self.reconnect_max_s < self.reconnect_delay_s:
            raise ValueError("'reconnect_delay_s' must be > 0 and at most reconnect_max_s")
        if self.open_timeout_s is not None and self.open_timeout_s <= 0:
            raise ValueError("'open_timeout_s' must be positive (or null to wait for ever), "
                             f"got {self.open_timeout_s}")
        if self.lost_timeout_s is not None and self.lost_timeout_s <= 0:
            raise ValueError("'lost_timeout_s' must be positive (or null to reopen for ever), "
                             f"got {self.lost_timeout_s}")

    def parsed_gain(self) -> Gain:
        return Gain.parse(self.gain, "'gain'")

    @property
    def live(self) -> bool:
        """Live sources produce frames whether or not we keep up: the pipeline drops, never waits."""
        return self.kind in ("camera", "zmq")


@dataclass
class SyncConfig:
    """offset: seconds, IR time + offset = visible time (default: the calibration's
    ``time_offset``, else 0). tolerance: the largest time difference of a pair in seconds
    (default: half the slower stream's frame interval)."""

    offset: float | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"'tolerance' must be >= 0 seconds, got {self.tolerance}")


@dataclass
class InferenceConfig:
    """weights: a checkpoint (default: the shipped ``models/didfuse_flir.pt``). fusion: the
    fusion rule. engine/precision: see :mod:`streamfuse.engines` (``auto``: the fastest engine
    installed for the device, bf16 on CPUs with AMX/AVX512-BF16, fp16 on CUDA; ``eager`` +
    ``fp32`` reproduces ``streamfuse fuse`` exactly). batch_size: pairs per network call
    (1 = lowest latency); batch_timeout_ms: the longest a batch waits to fill (a batch that does
    not fill is padded to batch_size for engines other than eager, so they build one network per
    frame size). threads: CPU threads for torch (default: torch's choice)."""

    weights: str | None = None
    fusion: str = "saliency+cam"
    engine: str = "auto"
    precision: str = "auto"
    device: str = "cpu"
    batch_size: int = 1
    batch_timeout_ms: float = 10.0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.fusion not in RULES:
            raise ValueError(f"'fusion' must be one of {', '.join(RULES)}; got {self.fusion!r}")
        if self.engine not in ("auto", *ENGINES):
            raise ValueError(f"'engine' must be one of auto, {', '.join(ENGINES)}; got {self.engine!r}")
        if self.precision not in ("auto", *PRECISIONS):
            raise ValueError(f"'precision' must be one of auto, {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.batch_size < 1:
            raise ValueError(f"'batch_size' must be at least 1, got {self.batch_size}")
        if self.batch_timeout_ms < 0:
            raise ValueError(f"'batch_timeout_ms' must be >= 0, got {self.batch_timeout_ms}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"'threads' must be at least 1, got {self.threads}")


@dataclass
class QueueConfig:
    """Capacities of the queues between stages (frames or pairs). Live runs drop the oldest item
    of a full queue; file runs wait."""

    capture: int = 4
    pairs: int = 4
    fused: int = 8

    def __post_init__(self) -> None:
        for name in ("capture", "pairs", "fused"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be at least 1, got {getattr(self, name)}")


@dataclass
class ZmqSinkConfig:
    """Publishes fused frames (see :mod:`streamfuse.pipeline.wire`). hwm: frames ZeroMQ queues
    per subscriber before dropping. wait_subscribers: wait for this many subscribers before the
    run starts (at most wait_timeout_s), so they get the first frame too."""

    url: str = DEFAULT_URL
    hwm: int = 16
    encoding: Literal["raw", "jpeg"] = "raw"
    jpeg_quality: int = 90
    wait_subscribers: int = 0
    wait_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.hwm < 1:
            raise ValueError(f"'hwm' must be at least 1, got {self.hwm}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"'jpeg_quality' must be 1..100, got {self.jpeg_quality}")


@dataclass
class DisplaySinkConfig:
    """An OpenCV window; side_by_side shows IR | visible | fused; show_fps draws the rate."""

    window: str = "StreamFuse"
    side_by_side: bool = False
    show_fps: bool = True


@dataclass
class VideoSinkConfig:
    """A video file written with PyAV at the visible source's frame rate (or ``fps``).
    crf: quality for H.264/H.265 (lower is better, 0 lossless)."""

    path: str
    codec: str = "h264"
    crf: int | None = 20
    pix_fmt: str = "yuv420p"
    fps: float | None = None

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ValueError("'path' is empty; name the video file, e.g. out/fused.mp4")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"'fps' must be positive, got {self.fps}")


@dataclass
class FolderSinkConfig:
    """One lossless PNG per fused frame, named by sequence number (``000000.png``, ...)."""

    path: str

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ValueError("'path' is empty; name the folder, e.g. out/frames")


@dataclass
class SinksConfig:
    """Any of the four outputs, at the same time."""

    zmq: ZmqSinkConfig | None = None
    display: DisplaySinkConfig | None = None
    video: VideoSinkConfig | None = None
    folder: FolderSinkConfig | None = None


@dataclass
class LimitsConfig:
    """Stop after this many fused frames or seconds (default: when a source ends, or Ctrl-C)."""

    frames: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"'frames' must be at least 1 (or null for no limit), got {self.frames}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"'seconds' must be positive (or null for no limit), got {self.seconds}")


@dataclass
class PipelineConfig:
    """A whole run: two sources, optional calibration, sync, inference, sinks."""

    ir: SourceConfig
    vis: SourceConfig
    calibration: str | None = None
    sync: SyncConfig = field(default_factory=SyncConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    queues: QueueConfig = field(default_factory=QueueConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    stats_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.stats_interval_s > 0:
            raise ValueError(f"'stats_interval_s' must be positive, got {self.stats_interval_s}")

    @property
    def live(self) -> bool:
        return self.ir.live or self.vis.live


def _from_here(path: str) -> str:
    """What to add to a missing-file message about ``path``: where a relative path was looked
    for (config paths are relative to the directory the command runs in, not to the file)."""
    if Path(path).is_absolute():
        return ""
    return (f" (looked for in the current directory {Path.cwd()}: run from the directory the "
            "config's paths start from, e.g. the repository root, or give absolute paths)")


def check_files(config: PipelineConfig, source: str) -> None:
    """Every input file named by ``config`` exists, and at least one sink is set (before any
    thread starts). ``source`` names the config file in messages."""
    for key, section in (("ir", config.ir), ("vis", config.vis)):
        if section.kind == "file" and not Path(section.path).is_file():
            raise StreamFuseError(f"{source}: {key}.path: no such video file: {section.path}"
                                  f"{_from_here(section.path)}")
        if section.kind == "folder" and not Path(section.path).is_dir():
            raise StreamFuseError(f"{source}: {key}.path: no such image folder: {section.path}"
                                  f"{_from_here(section.path)}")
    if config.calibration is not None and not Path(config.calibration).is_file():
        raise StreamFuseError(
            f"{source}: calibration: no such file: {config.calibration}"
            + (_from_here(config.calibration) or " (make one with the calibration tools, or remove "
               "the key for pre-aligned cameras)")
        )
    if config.inference.weights is not None and not Path(config.inference.weights).is_file():
        raise StreamFuseError(f"{source}: inference.weights: no such checkpoint: "
                              f"{config.inference.weights}{_from_here(config.inference.weights)}")
    if config.inference.weights is None and not DEFAULT_WEIGHTS.is_file():
        raise StreamFuseError(
            f"{source}: inference.weights is not set and the shipped {DEFAULT_WEIGHTS} is missing from "
            "this checkout; set it, e.g. --set inference.weights=runs/flir/didfuse.pt"
        )
    sinks = config.sinks
    if not any((sinks.zmq, sinks.display, sinks.video, sinks.folder)):
        raise StreamFuseError(f"{source}: sinks: no output configured; add sinks.video, sinks.folder, sinks.zmq or sinks.display")


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML (``overrides``: ``KEY=VALUE`` as for ``--set``)."""
    config = load_yaml(PipelineConfig, path, overrides)
    check_files(config, str(path))
    return config
