"""Speed of the engines against the authors' baseline, measured in one process (`streamfuse bench`).

Every figure is the throughput of ``Fuser.fuse_tensors`` (the whole path: encoder -> fusion
layer -> decoder, float pairs in, fused float out) after warm-up, with its speedup over the
baseline a user of the authors' code gets, measured in the same run on the same input: one pair
at a time, fp32 eager PyTorch, BatchNorm not folded, fusion rule ``sum``. The baseline is timed
before and after the engines and its calls pooled, so a change of the machine's load during the
run (the cores may be shared) is visible (``baseline_drift``) and does not land on one side only.
Each configuration is also timed in alternation with the baseline, call by call
(``speedup_interleaved``, the median of the rounds' ratios): on a host whose speed drifts from
minute to minute, that ratio does not depend on which minute each block fell in.

Also reported: FLOPs per pair (the convolutions, counted analytically; the fusion layer's
element-wise work is not counted), the fraction of the device's peak those FLOPs reach (peak =
a large matmul timed in the same run, in the engine's precision), each engine's output against
fp32 eager with the same rule (gray levels), and the fusion layer's cost as a share of the
network's: the engine timed with rule ``sum`` (whose fusion is four additions) gives the network
time, the difference to the full rule the fusion layer's.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from streamfuse.engines import (
    build_fuser,
    check_engine_runs,
    resolve_device,
    resolve_precision,
)
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import REPO_ROOT, Fuser, to_uint8
from streamfuse.fusion import FusionConfig
from streamfuse.model import DIDFuse

BASELINE_RULE = "sum"
SAMPLE_PAIR = REPO_ROOT / "samples" / "pairs"
# Peak measurement: square matmul size and repetitions (best of).
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
PEAK_REPEATS = 5
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Resolutions are (width, height)."""

    resolutions: tuple[tuple[int, int], ...] = ((640, 512), (1280, 1024))
    engines: tuple[str, ...] = ("eager", "compile", "openvino")
    precisions: tuple[str, ...] = ("fp32", "bf16", "int8")
    batch_sizes: tuple[int, ...] = (1,)
    rule: str = FusionConfig.rule
    device: str = "cpu"
    warmup: int = 2
    min_iterations: int = 5
    seconds: float = 10.0
    fusion_share: bool = True
    interleaved_speedup: bool = True
    cache_dir: str | None = None


@dataclass
class Timing:
    """Seconds per call of one measured configuration."""

    calls: int
    batch: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    pairs_per_s: float

    @classmethod
    def from_seconds(cls, seconds: np.ndarray, batch: int) -> "Timing":
        return cls(
            calls=int(seconds.size), batch=batch,
            p50_ms=float(np.percentile(seconds, 50) * 1e3),
            p99_ms=float(np.percentile(seconds, 99) * 1e3),
            mean_ms=float(seconds.mean() * 1e3),
            pairs_per_s=float(batch / seconds.mean()),
        )


@dataclass
class Result:
    """One engine/precision/batch at one resolution."""

    resolution: str
    engine: str
    precision: str
    batch: int
    status: str = "ok"
    build_s: float | None = None
    timing: Timing | None = None
    speedup: float | None = None
    speedup_interleaved: float | None = None
    achieved_gflops: float | None = None
    fraction_of_peak: float | None = None
    gray_diff_mean: float | None = None
    gray_diff_max: float | None = None
    repeatable: bool | None = None
    network_ms: float | None = None
    fusion_ms: float | None = None
    fusion_share: float | None = None


@dataclass
class ResolutionReport:
    """``baseline`` pools the baseline's calls timed before and after the engines (the machine's
    load can change during a run); speedups are against it. ``baseline_drift``: after/before
    pairs/s, 1.0 when the load did not change."""

    resolution: str
    gflop_per_pair: float
    baseline: Timing
    baseline_before: Timing
    baseline_after: Timing | None = None
    baseline_drift: float | None = None
    results: list[Result] = field(default_factory=list)


def conv_flops(model: DIDFuse, height: int, width: int) -> int:
    """FLOPs (multiply and add counted as 2) of one fused pair's convolutions at ``height`` x
    ``width``: the encoder runs on both images, the decoder once. Every conv keeps the size."""
    def per_image(module: nn.Module) -> int:
        return sum(
            2 * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
            * height * width
            for conv in module.modules() if isinstance(conv, nn.Conv2d)
        )
    return 2 * per_image(model.encoder) + per_image(model.decoder)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_of_one_call(call: Callable[[], object], device: torch.device) -> float:
    """CUDA: device time between events (the call's kernels only); CPU: wall time."""
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3
    tick = time.perf_counter()
    call()
    return time.perf_counter() - tick


def time_calls(call: Callable[[], object], device: torch.device, warmup: int,
               min_iterations: int, seconds: float) -> np.ndarray:
    """Seconds per ``call()`` after ``warmup`` calls: at least ``min_iterations`` calls, more
    while ``seconds`` last (see :func:`_seconds_of_one_call`)."""
    return time_interleaved([call], device, warmup, min_iterations, seconds)[:, 0]


def median_speedup(rounds: np.ndarray, batch: int) -> float:
    """Median over rounds of ``(baseline seconds per pair) / (engine seconds per pair)``, from
    :func:`time_interleaved` rounds of ``[engine call of batch pairs, baseline call of 1 pair]``."""
    return float(np.median(rounds[:, 1] * batch / rounds[:, 0]))


def time_interleaved(calls: Sequence[Callable[[], object]], device: torch.device, warmup: int,
                     min_iterations: int, seconds: float) -> np.ndarray:
    """``(rounds, len(calls))`` seconds: every round times each call once, in turn, after
    ``warmup`` rounds; at least ``min_iterations`` rounds, more while ``seconds`` last.

    On a host whose speed drifts (this project's 2-core CPU: 2x from minute to minute), calls
    timed in separate blocks are compared across different conditions; within a round they
    share them, so per-round ratios stay steady.
    """
    for _ in range(warmup):
        for call in calls:
            call()
    synchronize(device)
    rounds: list[list[float]] = []
    started = time.perf_counter()
    while len(rounds) < min_iterations or time.perf_counter() - started < seconds:
        rounds.append([_seconds_of_one_call(call, device) for call in calls])
    return np.asarray(rounds)


def measure_peak_gflops(device: torch.device, precision: str) -> float:
    """Best-of-``PEAK_REPEATS`` throughput of a square matmul in ``precision`` on ``device``
    (int8: :func:`measure_int8_peak_gops`)."""
    if precision == "int8":
        return measure_int8_peak_gops()
    size = PEAK_SIZE[device.type]
    dtype = PEAK_DTYPES[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = np.min(time_calls(lambda: torch.mm(a, b), device, warmup=1,
                             min_iterations=PEAK_REPEATS, seconds=0.0))
    return 2 * size**3 / best / 1e9


def measure_int8_peak_gops(size: int = 2 * PEAK_SIZE["cpu"]) -> float:
    """Best-of-``PEAK_REPEATS`` rate of a square int8 matmul as OpenVINO runs it on the CPU
    (FakeQuantize on both operands, turned into an int8 MatMul by its low-precision
    transformations), in GOP/s. PyTorch's CPU int8 matmul does not reach the AMX/VNNI rate; the
    int8 engine is OpenVINO's. Twice the float size, so quantizing the input stays minor."""
    import openvino as ov
    import openvino.opset13 as ops

    from streamfuse.engines.int8 import fake_quantize

    rng = np.random.default_rng(0)
    parameter = ops.parameter([size, size], ov.Type.f32)
    weights = ops.constant(rng.uniform(-1, 1, (size, size)).astype(np.float32))
    product = ops.matmul(fake_quantize(parameter, -1.0, 1.0, 256),
                         fake_quantize(weights, -1.0, 1.0, 255), False, False)
    compiled = ov.Core().compile_model(ov.Model([product], [parameter]), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    data = rng.uniform(-1, 1, (size, size)).astype(np.float32)
    best = np.min(time_calls(lambda: request.infer([data]), torch.device("cpu"), warmup=1,
                             min_iterations=PEAK_REPEATS, seconds=0.0))
    return 2 * size**3 / best / 1e9


def bench_pair(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """An IR/visible pair of ``height`` x ``width`` uint8: the repository's sample TNO pair
    resized when present (real content: the histogram and guided filter see real statistics),
    else smooth random scenes."""
    ir_path, vis_path = SAMPLE_PAIR / "ir" / "tno_007.png", SAMPLE_PAIR / "vis" / "tno_007.png"
    if ir_path.is_file() and vis_path.is_file():
        images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in (ir_path, vis_path)]
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, size=(height // 16, width // 16), dtype=np.uint8) for _ in range(2)]
    ir, vis = (cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR) for image in images)
    return ir, vis


def as_batch(image: np.ndarray, batch: int, device: torch.device) -> Tensor:
    """``(H, W)`` uint8 -> ``(batch, 1, H, W)`` float in [0, 1] on ``device``."""
    tensor = torch.from_numpy(image).float().div(255)[None, None]
    return tensor.expand(batch, -1, -1, -1).contiguous().to(device)


def gray_difference(fused: Tensor, reference: Tensor) -> tuple[float, float]:
    levels = (to_uint8(fused.cpu()).int() - to_uint8(reference.cpu()).int()).abs().float()
    return float(levels.mean()), float(levels.max())


def machine_description(device: torch.device) -> dict:
    """CPU model, cores, threads, load, and the versions that decide the numbers."""
    cpu_model = platform.processor()
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = dict(line.split(":", 1) for line in cpuinfo.read_text().split("\n\n")[0].splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        cpu_model = fields.get("model name", cpu_model)
        wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
        flags = [flag for flag in fields.get("flags", "").split() if flag in wanted]
    description = {
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_flags": flags,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if hasattr(os, "getloadavg"):
        description["load_average_start"] = list(os.getloadavg())
    try:
        import openvino

        description["openvino"] = openvino.get_version()
    except ImportError:
        description["openvino"] = None
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
        description["cuda"] = torch.version.cuda
        try:
            import torch_tensorrt

            description["torch_tensorrt"] = torch_tensorrt.__version__
        except ImportError:
            description["torch_tensorrt"] = None
    return description


class Bench:
    """Runs a :class:`BenchConfig` on one network; ``progress`` gets one line per measurement."""

    def __init__(self, model: DIDFuse, config: BenchConfig,
                 progress: Callable[[str], None] = print, advance: Callable[[], None] = lambda: None):
        self.model = model.eval()
        self.config = config
        self.device = resolve_device(config.device)
        self.progress = progress
        self.advance = advance
        self.peaks: dict[str, float] = {}
        # Each compiled configuration (shape, batch, rule, precision) is one more Dynamo entry
        # for FusionNet.forward; past the default limit of 8, Dynamo would quietly run eager and
        # the table would time the wrong engine.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)

    def planned(self) -> list[tuple[str, str, int]]:
        """(engine, precision, batch) combinations per resolution, in run order."""
        return [(e, p, b) for e in self.config.engines for p in self.config.precisions
                for b in self.config.batch_sizes]

    def skip_reason(self, engine: str, precision: str) -> str | None:
        try:
            check_engine_runs(engine, self.device)
            resolve_precision(precision, engine, self.device)
        except StreamFuseError as error:
            return str(error)
        return None

    def _time_seconds(self, fuser: Fuser, ir: Tensor, vis: Tensor) -> np.ndarray:
        return time_calls(lambda: fuser.fuse_tensors(ir, vis), self.device, self.config.warmup,
                          self.config.min_iterations, self.config.seconds)

    @staticmethod
    @contextlib.contextmanager
    def _baseline_settings():
        """The authors' code runs with PyTorch's defaults: no cuDNN algorithm search, which our
        engines switch on for CUDA (a process-wide flag, so it is pinned here)."""
        search = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = search

    def _time_baseline(self, fuser: Fuser, ir: Tensor, vis: Tensor) -> np.ndarray:
        with self._baseline_settings():
            return self._time_seconds(fuser, ir, vis)

    def _time(self, fuser: Fuser, ir: Tensor, vis: Tensor) -> Timing:
        return Timing.from_seconds(self._time_seconds(fuser, ir, vis), ir.shape[0])

    def _build(self, rule: str, engine: str, precision: str, ir: Tensor, vis: Tensor) -> tuple[Fuser, float, Tensor]:
        """The engine, the seconds to build it and run it once (compilation), and that output."""
        started = time.perf_counter()
        fuser = build_fuser(self.model, rule, engine, precision, self.device, self.config.cache_dir)
        fused = fuser.fuse_tensors(ir, vis)
        synchronize(self.device)
        return fuser, time.perf_counter() - started, fused

    def peak(self, precision: str) -> float:
        if precision not in self.peaks:
            self.peaks[precision] = measure_peak_gflops(self.device, precision)
            self.progress(f"peak {precision} matmul: {self.peaks[precision]:.0f} GFLOP/s")
        return self.peaks[precision]

    def run_resolution(self, width: int, height: int) -> ResolutionReport:
        name = f"{width}x{height}"
        ir_image, vis_image = bench_pair(width, height)
        one_ir, one_vis = as_batch(ir_image, 1, self.device), as_batch(vis_image, 1, self.device)
        baseline_fuser = Fuser(self.model, BASELINE_RULE, self.device, fold_bn=False)
        before = self._time_baseline(baseline_fuser, one_ir, one_vis)
        baseline = Timing.from_seconds(before, 1)
        self.progress(f"{name} baseline (fp32 eager, BN unfolded, rule sum, 1 pair): "
                      f"{baseline.pairs_per_s:.2f} pairs/s, p50 {baseline.p50_ms:.0f} ms")
        gflop = conv_flops(self.model, height, width) / 1e9
        report = ResolutionReport(name, gflop, baseline, baseline_before=baseline)
        reference = Fuser(self.model, self.config.rule, self.device, fold_bn=False).fuse_tensors(one_ir, one_vis)
        results = [Result(name, e, p, b) for e, p, b in self.planned()]
        def baseline_call() -> Tensor:
            with self._baseline_settings():
                return baseline_fuser.fuse_tensors(one_ir, one_vis)
        for result in results:
            self._run_one(result, one_ir, one_vis, reference, gflop, baseline_call)
        after = self._time_baseline(baseline_fuser, one_ir, one_vis)
        report.baseline_after = Timing.from_seconds(after, 1)
        report.baseline = Timing.from_seconds(np.concatenate([before, after]), 1)
        report.baseline_drift = report.baseline_after.pairs_per_s / report.baseline_before.pairs_per_s
        self.progress(f"{name} baseline again: {report.baseline_after.pairs_per_s:.2f} pairs/s "
                      f"(after/before {report.baseline_drift:.2f})")
        for result in results:
            if result.timing is not None:
                result.speedup = result.timing.pairs_per_s / report.baseline.pairs_per_s
                result.fraction_of_peak = result.achieved_gflops / self.peaks[result.precision]
        report.results = results
        return report

    def _run_one(self, result: Result, one_ir: Tensor, one_vis: Tensor, reference: Tensor,
                 gflop: float, baseline_call: Callable[[], object]) -> None:
        """Measures ``result``'s configuration into it (or records why it was skipped)."""
        reason = self.skip_reason(result.engine, result.precision)
        if reason is not None:
            result.status = f"skipped: {reason}"
        else:
            try:
                self._measure(result, one_ir, one_vis, reference, gflop, baseline_call)
            except (RuntimeError, StreamFuseError) as error:
                result.status = f"failed: {str(error).strip().splitlines()[0][:300]}"
            finally:
                self._release_gpu_memory()
            self.progress(self.describe(result))
        self.advance()

    def _release_gpu_memory(self) -> None:
        """Frees what the last configuration's engines held on the GPU. Compiled CUDA graphs keep
        private memory pools after their fuser is gone (on an H100, 50 GiB after compile at batch
        64 at 640x512 left eager at batch 64 out of memory); Dynamo's reset drops them."""
        if self.device.type == "cuda":
            gc.collect()
            torch._dynamo.reset()
            torch.cuda.empty_cache()

    def _measure(self, result: Result, one_ir: Tensor, one_vis: Tensor, reference: Tensor,
                 gflop: float, baseline_call: Callable[[], object]) -> None:
        engine, precision, batch = result.engine, result.precision, result.batch
        ir, vis = one_ir.expand(batch, -1, -1, -1).contiguous(), one_vis.expand(batch, -1, -1, -1).contiguous()
        fuser, result.build_s, fused = self._build(self.config.rule, engine, precision, ir, vis)
        result.timing = self._time(fuser, ir, vis)
        # The output is checked on the first call and again after timing: a compiled CUDA graph
        # runs its first call outside the graph and replays it afterwards.
        later = fuser.fuse_tensors(ir, vis)
        result.repeatable = bool(torch.equal(later.cpu(), fused.cpu()))
        first_diff, later_diff = (gray_difference(x[:1], reference) for x in (fused, later))
        result.gray_diff_mean, result.gray_diff_max = map(max, zip(first_diff, later_diff))
        result.achieved_gflops = gflop * result.timing.pairs_per_s
        self.peak(precision)
        if self.config.fusion_share and batch == self.config.batch_sizes[0] and self.config.rule != BASELINE_RULE:
            self._measure_fusion_share(result, fuser, ir, vis)
        if self.config.interleaved_speedup:
            # The block speedup compares the engine with a baseline timed minutes away; on a
            # host whose speed drifts, alternating the two calls is the steadier ratio.
            rounds = time_interleaved([lambda: fuser.fuse_tensors(ir, vis), baseline_call],
                                      self.device, 0, self.config.min_iterations, 0.0)
            result.speedup_interleaved = median_speedup(rounds, batch)

    def _measure_fusion_share(self, result: Result, fuser: Fuser, ir: Tensor, vis: Tensor) -> None:
        """The fusion layer's time against the network alone (the same engine with rule sum):
        the two are timed in alternation and the share is the median of the rounds' ratios,
        since timings taken minutes apart on a drifting host gave shares from 21 % to 81 %."""
        network_fuser, _, _ = self._build(BASELINE_RULE, result.engine, result.precision, ir, vis)
        rounds = time_interleaved(
            [lambda: fuser.fuse_tensors(ir, vis), lambda: network_fuser.fuse_tensors(ir, vis)],
            self.device, self.config.warmup, self.config.min_iterations, self.config.seconds)
        full, network = rounds[:, 0], rounds[:, 1]
        result.network_ms = float(np.median(network)) * 1e3
        result.fusion_share = float(np.median(full / network)) - 1
        result.fusion_ms = result.fusion_share * result.network_ms

    @staticmethod
    def describe(result: Result) -> str:
        head = f"{result.resolution} {result.engine} {result.precision} batch {result.batch}"
        if result.timing is None:
            return f"{head}: {result.status}"
        share = "" if result.fusion_share is None else f", fusion layer {100 * result.fusion_share:.0f}% of network"
        return (f"{head}: {result.timing.pairs_per_s:.2f} pairs/s, "
                f"p50 {result.timing.p50_ms:.0f} ms, gray diff mean {result.gray_diff_mean:.2f} "
                f"max {result.gray_diff_max:.0f}{share}"
                f"{'' if result.repeatable is not False else ', later calls differ from the first'}")

    def run(self) -> dict:
        machine = machine_description(self.device)
        reports = []
        for width, height in self.config.resolutions:
            reports.append(self.run_resolution(width, height))
            # Peaks are re-measured after each resolution and the best kept: a busy moment
            # must not make the engines look closer to the peak than they are.
            for precision in list(self.peaks):
                self.peaks[precision] = max(self.peaks[precision], measure_peak_gflops(self.device, precision))
            for report in reports:
                for result in report.results:
                    if result.timing is not None:
                        result.fraction_of_peak = result.achieved_gflops / self.peaks[result.precision]
        if hasattr(os, "getloadavg"):
            machine["load_average_end"] = list(os.getloadavg())
        return {
            "format": "streamfuse-bench",
            "version": 1,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": asdict(self.config),
            "machine": machine,
            "peak_gflops": self.peaks,
            "resolutions": [asdict(report) for report in reports],
        }


def format_table(bench: dict) -> str:
    """The results as a fixed-width text table, one block per resolution."""
    lines = []
    machine = bench["machine"]
    lines.append(f"{machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} torch threads), "
                 f"device {machine['device']}, torch {machine['torch']}, openvino {machine.get('openvino')}")
    if "load_average_start" in machine:
        end = machine.get("load_average_end", [float("nan")])[0]
        lines.append(f"load average (1 min) at start {machine['load_average_start'][0]:.1f}, at end {end:.1f} "
                     f"(other processes on these cores slow every figure, the baseline included)")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in bench["peak_gflops"].items())
    unit = "GFLOP/s (int8: GOP/s)" if "int8" in bench["peak_gflops"] else "GFLOP/s"
    lines.append(f"peak matmul {unit}: {peaks}; rule {bench['config']['rule']}")
    header = (f"{'engine':<9} {'prec':<5} {'batch':>5} {'pairs/s':>8} {'speedup':>8} {'alt.':>6} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'%peak':>6} {'diff mean/max':>14} {'fusion %net':>11} {'build s':>8}")
    for report in bench["resolutions"]:
        base = report["baseline"]
        lines.append("")
        lines.append(f"{report['resolution']}: {report['gflop_per_pair']:.0f} GFLOP/pair; baseline "
                     f"(fp32 eager, BN unfolded, rule sum, 1 pair) {base['pairs_per_s']:.3f} pairs/s, "
                     f"p50 {base['p50_ms']:.0f} ms, p99 {base['p99_ms']:.0f} ms ({base['calls']} calls; "
                     f"timed before and after the engines, after/before {report['baseline_drift']:.2f}; "
                     f"alt.: the speedup with engine and baseline called in alternation, median of rounds)")
        lines.append(header)
        for r in report["results"]:
            t = r["timing"]
            if t is None:
                lines.append(f"{r['engine']:<9} {r['precision']:<5} {r['batch']:>5} {r['status']}")
                continue
            share = "" if r["fusion_share"] is None else f"{100 * r['fusion_share']:.0f}%"
            alternating = "" if r.get("speedup_interleaved") is None else f"{r['speedup_interleaved']:.1f}x"
            lines.append(
                f"{r['engine']:<9} {r['precision']:<5} {r['batch']:>5} {t['pairs_per_s']:>8.2f} "
                f"{r['speedup']:>7.1f}x {alternating:>6} {t['p50_ms']:>8.0f} {t['p99_ms']:>8.0f} "
                f"{100 * r['fraction_of_peak']:>5.0f}% {r['gray_diff_mean']:>7.2f}/{r['gray_diff_max']:<6.0f} "
                f"{share:>11} {r['build_s']:>8.1f}"
            )
    return "\n".join(lines)


def parse_resolutions(text: str) -> tuple[tuple[int, int], ...]:
    """``"640x512,1280x1024"`` -> ((640, 512), (1280, 1024))."""
    resolutions = []
    for item in text.split(","):
        width, _, height = item.strip().lower().partition("x")
        if not (width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 8:
            raise StreamFuseError(f"--resolutions: {item!r} is not WIDTHxHEIGHT (each >= 8), e.g. 640x512")
        resolutions.append((int(width), int(height)))
    return tuple(resolutions)


def parse_names(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise StreamFuseError(f"{option}: {', '.join(unknown) or 'nothing'} given; use a comma list of {', '.join(allowed)}")
    return names


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for item in text.split(","):
        if not item.strip().isdigit() or int(item) < 1:
            raise StreamFuseError(f"--batch-sizes: {item!r} is not a positive integer")
        sizes.append(int(item))
    return tuple(sizes)

