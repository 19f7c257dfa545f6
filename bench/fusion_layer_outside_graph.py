"""Would the CPU fusion layer be cheaper outside the OpenVINO graph, in PyTorch? A/B, 640x512.

    python bench/fusion_layer_outside_graph.py [--data ../shared/data] [--rounds 12]
                                               [--out bench/results/fusion-layer-outside-graph.json]

Inside the CPU default (OpenVINO int8, rule ``saliency+cam``) the fusion layer costs about half
the network's time, most of it in OpenVINO's reduction and reference kernels. A split engine
(OpenVINO encoder -> PyTorch fusion layer -> OpenVINO decoder) could only win if PyTorch ran the
layer in less time than it costs inside the graph, before paying for the eight maps leaving
the graph and the four fused ones entering it. This measures that bound, in one process and
interleaved (each round times every runner once):

- ``openvino int8 (in the graph)``: the shipped engine's rule minus the same engine with rule
  ``sum`` (four additions), as ``streamfuse bench`` reports the fusion layer;
- ``inductor`` and ``eager``: :class:`streamfuse.fusion.FusionLayer` alone, ``torch.compile``d
  and not, on the eight real encoder maps of the pair (bf16 and fp32, channels_last, as an
  OpenVINO output would be handed over), rule minus rule ``sum`` on the same maps.

The pair is flir-test's first, resized to 640x512; the maps come from the shipped weights'
fp32 encoder. Each PyTorch runner's fused maps are compared with the fp32 eager layer's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from streamfuse.bench import machine_description  # noqa: E402
from streamfuse.engines import create_fuser  # noqa: E402
from streamfuse.fuser import Fuser  # noqa: E402
from streamfuse.fusion import FusionConfig, FusionLayer  # noqa: E402

WIDTH, HEIGHT = 640, 512
RULE = "saliency+cam"
DEFAULT_DATA = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))


def timing_pair(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """flir-test's first pair, uint8, resized to 640x512."""
    ir_path = sorted((data / "flir-test" / "ir").iterdir())[0]
    vis_path = next((data / "flir-test" / "vis").glob(ir_path.stem + ".*"))
    return tuple(cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (WIDTH, HEIGHT),
                            interpolation=cv2.INTER_AREA) for path in (ir_path, vis_path))


@torch.inference_mode()
def encoder_maps(ir_frame: np.ndarray, vis_frame: np.ndarray) -> tuple[tuple, tuple]:
    """The shipped weights' fp32 encoder maps (f1, f2, base, detail) of each camera."""
    net = Fuser.from_weights().net
    return tuple(tuple(net.encoder(torch.from_numpy(frame)[None, None].float() / 255))
                 for frame in (ir_frame, vis_frame))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=REPO_ROOT / "bench" / "results" / "fusion-layer-outside-graph.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ir_frame, vis_frame = timing_pair(args.data)
    ir_maps, vis_maps = encoder_maps(ir_frame, vis_frame)
    reference = FusionLayer().eval()
    with torch.inference_mode():
        exact = reference(ir_maps, vis_maps)

    # name -> (call with the rule, call with rule sum); each times one fused pair or map set.
    runners = {}
    with tempfile.TemporaryDirectory() as cache:
        for rule in (RULE, "sum"):
            fuser = create_fuser(rule=rule, engine="openvino", precision="int8",
                                 cache_dir=Path(cache) / rule)
            fuser.fuse(ir_frame, vis_frame)
            runners.setdefault("openvino int8 (in the graph)", []).append(
                lambda fuser=fuser: fuser.fuse(ir_frame, vis_frame))
        for dtype in (torch.bfloat16, torch.float32):
            maps = [tuple(x.to(dtype).contiguous(memory_format=torch.channels_last)
                          for x in camera) for camera in (ir_maps, vis_maps)]
            for mode in ("inductor", "eager"):
                for rule in (RULE, "sum"):
                    layer = FusionLayer(FusionConfig(rule=rule)).eval()
                    layer = torch.compile(layer) if mode == "inductor" else layer
                    runners.setdefault(f"{mode} {str(dtype).split('.')[-1]}", []).append(
                        lambda layer=layer, maps=maps: layer(*maps))
        with torch.inference_mode():
            for calls in runners.values():
                for call in calls:
                    call()  # compiles
                    call()  # warm
            agreement = {}
            for name, (call, _) in runners.items():
                if not name.startswith("openvino"):
                    fused = call()
                    agreement[name] = max(float((a.float() - b).abs().max())
                                          for a, b in zip(fused, exact))
            names = list(runners)
            seconds = np.zeros((args.rounds, len(names), 2))
            for round_index in range(args.rounds):
                for column, name in enumerate(names):
                    for variant, call in enumerate(runners[name]):
                        start = time.perf_counter()
                        call()
                        seconds[round_index, column, variant] = time.perf_counter() - start

    results = {}
    for column, name in enumerate(names):
        rule_ms, sum_ms = (float(np.median(seconds[:, column, v]) * 1e3) for v in (0, 1))
        layer_ms = float(np.median(seconds[:, column, 0] - seconds[:, column, 1]) * 1e3)
        results[name] = {"rule_ms": rule_ms, "sum_ms": sum_ms, "fusion_layer_ms": layer_ms}
        if name in agreement:
            results[name]["max_abs_vs_fp32_eager_maps"] = agreement[name]
        print(f"{name:30s} rule {rule_ms:7.1f} ms  sum {sum_ms:7.1f} ms  "
              f"fusion layer {layer_ms:7.1f} ms")
    report = {"machine": machine_description(torch.device("cpu")),
              "resolution": f"{WIDTH}x{HEIGHT}", "rule": RULE, "rounds": args.rounds,
              "threads": args.threads, "runners": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
