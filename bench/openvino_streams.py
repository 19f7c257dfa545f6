"""Whether OpenVINO's CPU streams raise the int8 engine's throughput: A/B, interleaved.

    python bench/openvino_streams.py [--rounds 20] [--pairs-per-round 4]
                                     [--out bench/results/openvino-streams.json]

The engine runs one inference request at a time on all cores (``PERFORMANCE_HINT: LATENCY``),
so every operation is split across the cores, the fusion layer's small and reference-kernel
ones too. With ``NUM_STREAMS`` = cores, each stream runs a whole request on one core, and
two batch-1 requests in flight use both. Three modes, each with the shipped weights at
640x512 in int8 (the CPU default), for rule ``saliency+cam`` and for ``sum`` (so the fusion
layer's share of the network is measured in each mode too):

- ``latency-b1``: the engine as shipped, one pair per request;
- ``latency-b2``: the same with two pairs per request (what ``batch_size: 2`` does);
- ``streams-b1``: one stream per core, one pair per request, as many requests in flight.

Each round runs ``--pairs-per-round`` real pairs (samples/pairs, resized) through every mode in
turn, since this machine's speed drifts from minute to minute; the speedups are medians of the
per-round ratios. The outputs of every mode are compared with the shipped mode's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.checkpoint import load_checkpoint  # noqa: E402
from streamfuse.engines import build_fuser  # noqa: E402
from streamfuse.engines.int8 import calibration_pairs, quantize_wide_convolutions  # noqa: E402
from streamfuse.fuser import DEFAULT_WEIGHTS  # noqa: E402

HEIGHT, WIDTH = 512, 640
MODES = ("latency-b1", "latency-b2", "streams-b1")


def sample_pairs() -> list[list[np.ndarray]]:
    """The repository's sample pairs (the engine's int8 calibration set) resized to 640x512 and
    kept on 8-bit levels like camera frames, as ``[ir, vis]`` (1, 1, H, W) float32 in [0, 1]."""
    return [[cv2.resize(np.round(image[0, 0] * 255).astype(np.uint8), (WIDTH, HEIGHT),
                        interpolation=cv2.INTER_AREA)[None, None].astype(np.float32) / 255
             for image in pair] for pair in calibration_pairs()]


def compiled_int8(fuser, batch: int, threads: int, properties: dict) -> ov.CompiledModel:
    """``fuser``'s int8 graph for ``batch`` pairs at 640x512, compiled with ``properties``."""
    graph = fuser._model_for_batch(batch).clone()
    quantize_wide_convolutions(graph, fuser._calibrated_ranges())
    graph.reshape({port: ov.PartialShape([batch, 1, HEIGHT, WIDTH]) for port in graph.inputs})
    return fuser._core.compile_model(graph, "CPU", {
        "INFERENCE_PRECISION_HINT": fuser._float_precision(), "INFERENCE_NUM_THREADS": threads,
        **properties})


def pairs_per_second(compiled: ov.CompiledModel, jobs: int, requests: list[list[np.ndarray]]) -> float:
    """Runs ``requests`` with up to ``jobs`` in flight; fused pairs per second."""
    queue = ov.AsyncInferQueue(compiled, jobs)
    start = time.perf_counter()
    for inputs in requests:
        queue.start_async(inputs)
    queue.wait_all()
    return sum(inputs[0].shape[0] for inputs in requests) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pairs-per-round", type=int, default=4, help="even")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench/results/openvino-streams.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(DEFAULT_WEIGHTS)
    samples = sample_pairs()
    singles = [samples[i % len(samples)] for i in range(args.pairs_per_round)]
    doubles = [[np.concatenate([first[c], second[c]]) for c in range(2)]
               for first, second in zip(singles[::2], singles[1::2])]
    rules = ("saliency+cam", "sum")
    runs = {}  # (rule, mode) -> (compiled, jobs, requests)
    latency, streams = {"PERFORMANCE_HINT": "LATENCY"}, {"NUM_STREAMS": args.threads}
    for rule in rules:
        fuser = build_fuser(model, rule, "openvino", "int8")
        runs[rule, "latency-b1"] = (compiled_int8(fuser, 1, args.threads, latency), 1, singles)
        runs[rule, "latency-b2"] = (compiled_int8(fuser, 2, args.threads, latency), 1, doubles)
        runs[rule, "streams-b1"] = (compiled_int8(fuser, 1, args.threads, streams), args.threads,
                                    singles)
    differences = {}
    for rule in rules:
        reference = runs[rule, "latency-b1"][0](singles[0])[0].copy()
        for mode in MODES:
            fused = runs[rule, mode][0](singles[0] if mode != "latency-b2" else doubles[0])[0][:1]
            differences[f"{rule}/{mode}"] = float(np.abs(np.round(fused * 255) - np.round(reference * 255)).max())
    for run in runs.values():  # warm-up
        pairs_per_second(*run)
    rates = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, run in runs.items():
            rates[key].append(pairs_per_second(*run))
    report = {"what": __doc__.splitlines()[0], "resolution": f"{WIDTH}x{HEIGHT}", "precision": "int8",
              "threads": args.threads, "rounds": args.rounds, "pairs_per_round": args.pairs_per_round,
              "machine": machine_description(torch.device("cpu")), "modes": {}}
    for (rule, mode), values in rates.items():
        shipped = rates[rule, "latency-b1"]
        entry = {"median_pairs_per_s": round(statistics.median(values), 3),
                 "speed_vs_latency_b1": round(statistics.median(
                     [a / b for a, b in zip(values, shipped)]), 3),
                 "max_gray_levels_vs_latency_b1": differences[f"{rule}/{mode}"],
                 "pairs_per_s_per_round": [round(v, 3) for v in values]}
        if rule != "sum":
            # Fusion layer / network: time with the rule over time with plain sums, minus one.
            entry["fusion_share_of_network"] = round(statistics.median(
                [s / r - 1 for s, r in zip(rates["sum", mode], values)]), 3)
        report["modes"][f"{rule}/{mode}"] = entry
        print(f"{rule:13s} {mode:11s} {entry['median_pairs_per_s']:6.2f} pairs/s  "
              f"x{entry['speed_vs_latency_b1']:.3f}  max diff {entry['max_gray_levels_vs_latency_b1']:.0f}"
              + (f"  fusion {entry['fusion_share_of_network']:.0%}" if "fusion_share_of_network" in entry else ""))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
