"""A/B of two CUDA changes in one process: the saliency histogram counted in pixel tiles
(``streamfuse.fusion.CUDA_HISTOGRAM_TILES``) and conv1's input padded to 8 channels
(``pad_input_channels``); ``torch.compile`` with CUDA graphs, fp16 autocast, rule saliency+cam
(and rule sum for the network alone), each variant timed right after it is built.

    python bench/gpu_ab.py cuda 32 640x512 bench/results/gpu-h200-ab-histogram-tiles-channel-padding.json

The recorded run (session 4) padded conv7's output channel to 8 as well, since dropped.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import streamfuse.fusion as fusion  # noqa: E402
from streamfuse.bench import as_batch, bench_pair, time_calls  # noqa: E402
from streamfuse.commands.bench import load_model  # noqa: E402
from streamfuse.engines.optimize import fold_zero_padding, pad_input_channels  # noqa: E402
from streamfuse.fuser import Fuser, to_uint8  # noqa: E402

device = torch.device(sys.argv[1])
batch = int(sys.argv[2])
width, height = map(int, sys.argv[3].split("x"))
out_path = Path(sys.argv[4])
# Every variant is one more compiled entry of FusionNet.forward.
torch._dynamo.config.recompile_limit = 64
cuda = device.type == "cuda"
torch.backends.cudnn.benchmark = True
dtype = torch.float16 if cuda else torch.bfloat16
model, _ = load_model(None)
ir_image, vis_image = bench_pair(width, height)
ir = as_batch(ir_image, batch, device).contiguous(memory_format=torch.channels_last)
vis = as_batch(vis_image, batch, device).contiguous(memory_format=torch.channels_last)


def build(rule, pad, tiles):
    fusion.CUDA_HISTOGRAM_TILES = tiles
    fuser = Fuser(model, rule, device, fold_bn=True)
    fold_zero_padding(fuser.net)
    if pad:
        pad_input_channels(fuser.net)
    net = fuser.net.to(memory_format=torch.channels_last)
    kw = dict(mode="reduce-overhead") if cuda else {}
    compiled = torch.compile(net, fullgraph=True, dynamic=False, **kw)

    def call():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            return compiled(ir, vis).float().clone()
    return call


# name, rule, pad conv1's input, histogram tiles
variants = [("before", "saliency+cam", False, 1), ("tiles64", "saliency+cam", False, 64),
            ("tiles64+pad", "saliency+cam", True, 64), ("tiles256+pad", "saliency+cam", True, 256),
            ("tiles16+pad", "saliency+cam", True, 16),
            ("net-before", "sum", False, 1), ("net-pad", "sum", True, 64)]
results, outputs, calls = {}, {}, {}
for name, rule, pad, tiles in variants:
    started = time.perf_counter()
    call = build(rule, pad, tiles)
    outputs[name] = call()
    build_s = time.perf_counter() - started
    seconds = time_calls(call, device, warmup=3, min_iterations=20, seconds=1.5)
    ref = outputs["before"] if rule != "sum" else outputs["net-before"]
    diff = (to_uint8(outputs[name].cpu()).int() - to_uint8(ref.cpu()).int()).abs()
    median = float(np.median(seconds))
    results[name] = dict(ms=median * 1e3, pairs_per_s=batch / median, build_s=build_s,
                         diff_mean=float(diff.float().mean()), diff_max=int(diff.max()))
    print(name, results[name], flush=True)
    calls[name] = (call, tiles)
call, tiles = calls["before"]
fusion.CUDA_HISTOGRAM_TILES = tiles
seconds = time_calls(call, device, warmup=3, min_iterations=20, seconds=1.5)
median = float(np.median(seconds))
results["before-again"] = dict(ms=median * 1e3, pairs_per_s=batch / median)
print("before-again", results["before-again"], flush=True)
for full, network in (("before", "net-before"), ("tiles64+pad", "net-pad"), ("tiles256+pad", "net-pad"),
                      ("tiles16+pad", "net-pad")):
    share = (results[full]["ms"] - results[network]["ms"]) / results[network]["ms"]
    results[full]["fusion_share"] = share
    print(f"{full}: fusion layer {100 * share:.0f}% of the network", flush=True)
report = dict(device=torch.cuda.get_device_name() if cuda else "cpu", batch=batch,
              size=f"{width}x{height}", torch=torch.__version__, results=results)
out_path.write_text(json.dumps(report, indent=2) + "\n")
