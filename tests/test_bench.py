"""`streamfuse bench` on a tiny resolution: the JSON holds what the issue asks for, consistently;
the analytic FLOP count agrees with PyTorch's own counter. (No speed is asserted.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from streamfuse.bench import (conv_flops, median_speedup, parse_resolutions, time_calls,
                              time_interleaved)
from streamfuse.checkpoint import save_checkpoint
from streamfuse.cli import main
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import FusionNet
from streamfuse.model import DIDFuse


@pytest.mark.parametrize("height, width", [(24, 32), (17, 40)])
def test_conv_flops_match_pytorchs_flop_counter(height, width):
    model = DIDFuse().eval()
    ir, vis = torch.rand(1, 1, height, width), torch.rand(1, 1, height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        FusionNet(model, "sum")(ir, vis)
    assert conv_flops(model, height, width) == counter.get_total_flops()


def test_time_calls_takes_at_least_the_minimum_of_samples():
    calls = []
    seconds = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, min_iterations=4, seconds=0.0)
    assert seconds.shape == (4,) and len(calls) == 6 and (seconds >= 0).all()


def test_time_interleaved_times_each_call_once_per_round_in_turn():
    order = []
    rounds = time_interleaved([lambda: order.append("full"), lambda: order.append("network")],
                              torch.device("cpu"), warmup=1, min_iterations=3, seconds=0.0)
    assert rounds.shape == (3, 2) and (rounds >= 0).all()
    assert order == ["full", "network"] * 4  # one warm-up round, then three timed ones


def test_bench_command_writes_json_and_table_with_speedups(tmp_path, capsys):
    torch.manual_seed(1)
    weights = save_checkpoint(DIDFuse(), tmp_path / "w.pt")
    output = tmp_path / "bench.json"
    assert main(["bench", "--resolutions", "40x32", "--engines", "eager", "--precisions", "fp32,fp16",
                 "--batch-sizes", "1,2", "--weights", str(weights), "--seconds", "0",
                 "--min-iterations", "3", "--warmup", "1", "-o", str(output)]) == 0
    bench = json.loads(output.read_text())
    assert "40x32" in output.with_suffix(".txt").read_text()
    assert bench["machine"]["cpu_count"] >= 1 and bench["machine"]["torch"] == torch.__version__
    assert len(bench["machine"]["load_average_start"]) == 3
    (report,) = bench["resolutions"]
    assert report["gflop_per_pair"] == pytest.approx(conv_flops(DIDFuse(), 32, 40) / 1e9)
    baseline, before, after = report["baseline"], report["baseline_before"], report["baseline_after"]
    assert baseline["calls"] == before["calls"] + after["calls"] >= 6
    assert baseline["p99_ms"] >= baseline["p50_ms"] > 0
    assert report["baseline_drift"] == pytest.approx(after["pairs_per_s"] / before["pairs_per_s"])
    by_config = {(r["precision"], r["batch"]): r for r in report["results"]}
    assert set(by_config) == {("fp32", 1), ("fp32", 2), ("fp16", 1), ("fp16", 2)}
    assert by_config[("fp16", 1)]["status"].startswith("skipped: precision fp16 is for CUDA")
    for batch in (1, 2):
        result = by_config[("fp32", batch)]
        timing = result["timing"]
        assert result["status"] == "ok" and timing["batch"] == batch and timing["calls"] >= 3
        assert timing["pairs_per_s"] == pytest.approx(batch * 1e3 / timing["mean_ms"])
        assert result["speedup"] == pytest.approx(timing["pairs_per_s"] / baseline["pairs_per_s"])
        assert result["fraction_of_peak"] == pytest.approx(
            result["achieved_gflops"] / bench["peak_gflops"]["fp32"])
        # fp32 eager with folded BatchNorm is the reference up to float rounding.
        assert result["gray_diff_max"] <= 1
        assert result["repeatable"] is True  # the call after timing gave the first call's pixels
        assert result["speedup_interleaved"] > 0
    shared = by_config[("fp32", 1)]
    assert shared["network_ms"] > 0 and shared["fusion_share"] == pytest.approx(
        shared["fusion_ms"] / shared["network_ms"])
    assert "baseline" in capsys.readouterr().out


def test_median_speedup_is_the_median_of_per_round_ratios_per_pair():
    # Rounds of [engine call of 2 pairs, baseline call of 1 pair]: the host slows 3x in round 2,
    # for both calls alike, and round 3 has an outlier engine call.
    rounds = np.array([[0.2, 1.0], [0.6, 3.0], [1.0, 1.0]])
    assert median_speedup(rounds, batch=2) == pytest.approx(10.0)
    assert median_speedup(rounds, batch=1) == pytest.approx(5.0)
    # Pooled, as block timings are, the same calls say 2.8x (3 pairs in 1.8 s against 3 in 5 s).


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="OpenVINO is not installed (pip install 'streamfuse[openvino]')")
def test_bench_times_openvino_int8_against_an_int8_peak(tmp_path):
    torch.manual_seed(2)
    weights = save_checkpoint(DIDFuse(), tmp_path / "w.pt")
    output = tmp_path / "bench.json"
    assert main(["bench", "--resolutions", "40x32", "--engines", "openvino", "--precisions", "int8",
                 "--weights", str(weights), "--seconds", "0", "--min-iterations", "3",
                 "--warmup", "1", "--no-fusion-share", "--cache-dir", str(tmp_path / "cache"),
                 "-o", str(output)]) == 0
    bench = json.loads(output.read_text())
    (result,) = bench["resolutions"][0]["results"]
    assert result["status"] == "ok" and result["precision"] == "int8"
    # The int8 peak is OpenVINO's int8 matmul, not a float one.
    assert set(bench["peak_gflops"]) == {"int8"} and bench["peak_gflops"]["int8"] > 0
    assert result["fraction_of_peak"] == pytest.approx(
        result["achieved_gflops"] / bench["peak_gflops"]["int8"])
    assert "int8: GOP/s" in output.with_suffix(".txt").read_text()


def test_bad_device_fails_in_one_line_before_any_progress(capsys, tmp_path):
    assert main(["bench", "--device", "cuda:x", "--resolutions", "40x32", "-o", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "streamfuse bench: error: device 'cuda:x' is not a device name; use cpu, cuda or cuda:N"
    assert not (tmp_path / "b.json").exists()


def test_bad_resolution_is_a_one_line_error():
    with pytest.raises(StreamFuseError, match="WIDTHxHEIGHT"):
        parse_resolutions("640x")
    assert parse_resolutions("640x512, 1280x1024") == ((640, 512), (1280, 1024))
    assert np.prod(parse_resolutions("8x8")[0]) == 64


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="needs Triton, which CUDA builds of PyTorch bring (the kernel is for CUDA GPUs)")
def test_fused_activation_stats_kernel_matches_the_reference_in_tritons_interpreter(tmp_path):
    # bench/gpu_fused_stats.py's kernel, run by Triton's CPU interpreter on a size that leaves a
    # partial block of pixels; its timings only mean something on a GPU.
    out = tmp_path / "stats.json"
    subprocess.run([sys.executable, "bench/gpu_fused_stats.py", "--device", "cpu", "--batch", "2",
                    "--size", "50x37", "--blocks", "16,64", "--out", str(out)],
                   cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TRITON_INTERPRET": "1"},
                   check=True, timeout=600)
    report = json.loads(out.read_text())
    for name, map_tolerance in (("prelu", 0.0), ("tanh", 2 ** -11)):  # tanh: one fp16 ulp below 1
        for block in report["results"][name]["blocks"].values():
            difference = block["max_difference"]
            assert difference["map"] <= map_tolerance
            assert difference["activity"] <= 64 * 2 ** -11 and difference["channel_mean"] <= 1e-5
