"""The activation-statistics kernel of bench/activation_stats.py (a GPU study) and the fusion
layer's reading of precomputed MapStats, which that study feeds it."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamfuse.engines.optimize import fold_zero_padding
from streamfuse.fuser import FusionNet
from streamfuse.fusion import FusionLayer, map_stats
from streamfuse.model import ConvLayer, fold_model
from test_optimize import random_input, random_model, real_input

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from bench.activation_stats import (  # noqa: E402
    ActivationStatsLayer, reference_activation_stats, rule_reads_stats, with_activation_stats,
)

NEEDS_TRITON = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="needs Triton, which CUDA builds of PyTorch bring (the kernel is for CUDA GPUs)")


def folded_net(rule: str = "saliency+cam") -> FusionNet:
    return fold_zero_padding(FusionNet(fold_model(random_model(seed=5)), rule).eval())


@pytest.mark.parametrize("inputs", ["random", "real"])
def test_network_with_activation_stats_matches_plain_network(inputs):
    plain = folded_net()
    with_stats = with_activation_stats(copy.deepcopy(plain))
    ir, vis = random_input(seed=6) if inputs == "random" else real_input()
    with torch.no_grad():
        expected, actual = plain(ir, vis), with_stats(ir, vis)
    assert expected.std() > 1e-3
    # float32 summation order only: the bias is added after the conv instead of inside it
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_fusion_layer_reads_the_stats_it_is_given():
    generator = torch.Generator().manual_seed(7)
    ir_maps, vis_maps = ([torch.randn(2, 64, 24, 32, generator=generator) * scale for scale in (1, 2, 0.5, 3)]
                         for _ in range(2))
    layer = FusionLayer()
    expected = layer(ir_maps, vis_maps)
    # Stats computed from the maps themselves: the same result, bit for bit.
    same = layer(ir_maps, vis_maps, [map_stats(x) for x in ir_maps], [map_stats(x) for x in vis_maps])
    for a, b in zip(same, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Either statistic exchanged between the cameras changes the weights and so the fused maps:
    # the layer reads both from the stats it is given.
    ir_stats, vis_stats = [map_stats(x) for x in ir_maps], [map_stats(x) for x in vis_maps]
    for field in ("activity", "channel_mean"):
        swapped_ir = [s._replace(**{field: getattr(v, field)}) for s, v in zip(ir_stats, vis_stats)]
        swapped_vis = [v._replace(**{field: getattr(s, field)}) for s, v in zip(ir_stats, vis_stats)]
        swapped = layer(ir_maps, vis_maps, swapped_ir, swapped_vis)
        for a, b in zip(swapped, expected):
            assert (a - b).abs().max() > 1e-2, field


def test_reference_statistics_are_those_of_the_stored_map():
    generator = torch.Generator().manual_seed(8)
    conv = (torch.randn(2, 64, 9, 7, generator=generator) * 2).double()
    bias = torch.randn(64, generator=generator).double()
    for tanh, slope in ((False, 0.3), (True, 0.0)):
        activated, activity, channel_mean = reference_activation_stats(conv, bias, slope, tanh)
        value = (conv + bias.view(1, -1, 1, 1)).numpy()
        expected = np.tanh(value) if tanh else np.where(value >= 0, value, slope * value)
        np.testing.assert_allclose(activated.numpy(), expected, rtol=1e-12)
        stats = map_stats(activated)
        torch.testing.assert_close(activity, stats.activity)
        torch.testing.assert_close(channel_mean, stats.channel_mean)


def test_activation_stats_layer_needs_a_folded_layer_with_a_known_activation():
    net = FusionNet(fold_model(random_model(seed=5)), "saliency+cam")
    with pytest.raises(ValueError, match="fold BatchNorm and the zero padding"):
        ActivationStatsLayer(net.encoder.conv2)  # zero padding still a module
    layer = ConvLayer(64, 64, "zero", nn.ReLU())
    layer[0], layer[2] = nn.Identity(), nn.Identity()
    with pytest.raises(ValueError, match="no kernel for ReLU"):
        ActivationStatsLayer(layer)
    assert rule_reads_stats("saliency+cam") and rule_reads_stats("cam") and rule_reads_stats("l1")
    assert not any(rule_reads_stats(rule) for rule in ("sum", "average", "weighted"))


@NEEDS_TRITON
def test_kernel_matches_a_float64_reference_in_tritons_interpreter():
    # Triton's CPU interpreter (TRITON_INTERPRET=1, read when kernels are defined: a fresh
    # process) runs the kernel on a size whose pixel count (13 x 11) leaves a partial block.
    script = """
import json, numpy as np, torch
from bench.activation_stats import launch_activation_stats
generator = torch.Generator().manual_seed(9)
report = []
for dtype in (torch.float16, torch.float32):
    for tanh, slope in ((False, 0.2), (True, 0.0)):
        conv = (torch.randn(2, 64, 13, 11, generator=generator) * 3).to(dtype)
        bias = torch.randn(64, generator=generator) * 0.5
        for block in (32, 64):
            activated, activity, mean = launch_activation_stats(conv, bias, slope, tanh, block)
            value = conv.double().numpy() + bias.double().numpy()[None, :, None, None]
            exact = np.tanh(value) if tanh else np.where(value >= 0, value, slope * value)
            stored = activated.double().numpy()
            # fp16: the map is rounded once (2**-11 relative); fp32: float32 arithmetic
            relative = 2.0 ** -11 if dtype == torch.float16 else 1e-6
            report.append(dict(
                dtype=str(dtype), tanh=tanh, block=block,
                channels_last=activated.is_contiguous(memory_format=torch.channels_last),
                map_excess=float((np.abs(stored - exact) - relative * np.abs(exact)).max()),
                activity_error=float(np.abs(activity.double().numpy() - np.abs(stored).sum(1, keepdims=True)).max()),
                mean_error=float(np.abs(mean.double().numpy() - np.abs(stored).mean((2, 3), keepdims=True)).max()),
                activity_scale=float(np.abs(stored).sum(1).max())))
print(json.dumps(report))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=REPO_ROOT, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == 8
    for case in report:
        assert case["channels_last"]
        # beyond the rounding: float32 error of tanh as 1 - 2 / (exp(2v) + 1) near 0
        assert case["map_excess"] <= 3e-7, case
        # float32 sums of 64 values of the stored map, against float64 sums of the same
        assert case["activity_error"] <= 1e-6 * case["activity_scale"] + 1e-6, case
        assert case["mean_error"] <= 1e-5, case


@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                    reason="needs a CUDA GPU (and Triton, which CUDA builds of PyTorch bring)")
def test_kernel_on_cuda_matches_the_reference_on_a_frame_sized_batch():
    from bench.activation_stats import activation_stats
    generator = torch.Generator().manual_seed(10)
    conv = (torch.randn(4, 64, 512, 640, generator=generator) * 2).half().cuda()
    conv = conv.contiguous(memory_format=torch.channels_last)
    bias = (torch.randn(64, generator=generator) * 0.1).cuda()
    for tanh, slope in ((False, 0.2), (True, 0.0)):
        activated, activity, channel_mean = activation_stats(conv, bias, slope, tanh)
        stats = map_stats(activated.double())
        expected = reference_activation_stats(conv.double().cpu(), bias.double().cpu(), slope, tanh)[0]
        excess = (activated.double().cpu() - expected).abs() - 2 ** -11 * expected.abs()
        assert excess.max() <= 3e-7
        torch.testing.assert_close(activity.double(), stats.activity, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(channel_mean.double(), stats.channel_mean, rtol=1e-5, atol=1e-6)
