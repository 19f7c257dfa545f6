"""The OpenVINO engine's int8 precision: the quantized convolution against a float64 NumPy
reference, that OpenVINO really runs it in int8, and the whole path against fp32 on real pairs
that are not among the calibration samples (mean 0.5 and max 4 gray levels, as bf16)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from streamfuse.engines import cpu_supports_bf16, create_fuser
from streamfuse.engines import openvino_engine
from streamfuse.engines.int8 import (ACTIVATION_LEVELS, WEIGHT_LEVELS, calibration_pairs,
                                     input_ranges, quantize_wide_convolutions,
                                     ranges_from_record, ranges_record, zero_on_a_level)
from streamfuse.errors import StreamFuseError
from streamfuse.fuser import Fuser, resolve_weights, to_uint8
from streamfuse.checkpoint import load_checkpoint
from conftest import read_pair

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="OpenVINO is not installed (pip install 'streamfuse[openvino]')")

RULE = "saliency+cam"


def test_zero_lies_on_a_level_and_the_range_is_kept():
    rng = np.random.default_rng(3)
    for low, high in [(-1.885, 8.146), (-0.07, 3.1), (0.4, 5.0), (-1.0, 1.0), *rng.uniform(
            [-5, 0.1], [0, 20], size=(50, 2))]:
        new_low, new_high = zero_on_a_level(low, high)
        step = (new_high - new_low) / (ACTIVATION_LEVELS - 1)
        assert step == pytest.approx((high - min(low, 0)) / (ACTIVATION_LEVELS - 1))
        zero_level = -new_low / step
        assert abs(zero_level - round(zero_level)) < 1e-6
        # The range moves by at most half a step.
        assert abs(new_low - min(low, 0)) <= step / 2 + 1e-12


def fake_quantized(values: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int) -> np.ndarray:
    """ONNX/OpenVINO FakeQuantize with equal input and output ranges, in float64."""
    step = (high - low) / (levels - 1)
    return np.round((np.clip(values, low, high) - low) / step) * step + low


def conv3x3(image: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(C, H, W), (O, C, 3, 3), (O,) -> (O, H, W), zero padding 1, float64."""
    channels, height, width = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((weights.shape[0], height, width)) + bias[:, None, None]
    for dy in range(3):
        for dx in range(3):
            window = padded[:, dy: dy + height, dx: dx + width]
            out += np.einsum("oc,chw->ohw", weights[:, :, dy, dx], window)
    return out


@pytest.mark.parametrize("activation", ["prelu", "tanh"])
def test_quantized_convolution_matches_a_float64_reference_and_runs_in_int8(activation):
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(7)
    # A PReLU-like map (mostly positive, a negative tail: a lopsided range, quantized shifted)
    # or a tanh map (a range symmetric about 0: signed int8 as it is), some exact zeros, and
    # trained-like weights; 64 channels in, 64 out, as the network's wide convolutions.
    if activation == "prelu":
        image = rng.gamma(1.5, 1.0, size=(1, 64, 24, 40)) - 0.3
    else:
        image = np.tanh(rng.normal(0, 1, size=(1, 64, 24, 40)))
    image[:, :, ::7] = 0.0
    weights = rng.normal(0, 0.05, size=(64, 64, 3, 3))
    bias = rng.normal(0, 0.1, size=64)
    parameter = ops.parameter([1, 64, 24, 40], ov.Type.f32)
    convolution = ops.convolution(parameter, ops.constant(weights.astype(np.float32)),
                                  [1, 1], [1, 1], [1, 1], [1, 1])
    output = ops.add(convolution, ops.constant(bias.astype(np.float32).reshape(1, -1, 1, 1)))
    model = ov.Model([output], [parameter])
    low, high = float(image.min()), float(np.percentile(image, 99.5))  # some values clip
    if activation == "tanh":
        low = -high * 128 / 127
    # Keep values clear of the rounding boundaries between levels: within float32 rounding of
    # one, the graph's float32 arithmetic may round either way (one value of these 61,440 lay
    # 3e-6 steps from a boundary).
    q_low, q_high = zero_on_a_level(low, high)
    step = (q_high - q_low) / (ACTIVATION_LEVELS - 1)
    from_boundary = (image - q_low) / step % 1 - 0.5
    image = np.where(np.abs(from_boundary) < 1e-3, image + 2e-3 * step, image)
    quantize_wide_convolutions(model, [(low, high)], margin=1.0)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    fused = compiled([image.astype(np.float32)])[0][0]

    magnitude = np.abs(weights.astype(np.float32)).reshape(64, -1).max(axis=1).astype(np.float64)
    magnitude = magnitude.reshape(-1, 1, 1, 1)
    expected = conv3x3(fake_quantized(image[0].astype(np.float32).astype(np.float64), q_low,
                                      q_high, ACTIVATION_LEVELS),
                       fake_quantized(weights.astype(np.float32).astype(np.float64), -magnitude,
                                      magnitude, WEIGHT_LEVELS), bias)
    # int8 products summed exactly in int32, scaled back in float32: float32 rounding only.
    np.testing.assert_allclose(fused, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
    # ... and far from the unquantized convolution, so the check above can tell them apart.
    assert np.abs(fused - conv3x3(image[0], weights, bias)).max() > 50 * 2e-5 * np.abs(expected).max()
    # Its input is quantized without a zero point: shifted onto a range starting at 0, or on
    # 128 steps below 0 and 127 above.
    convolution_inputs = [node.input(0).get_source_output().get_node() for node in
                          model.get_ordered_ops() if node.get_type_name() == "Convolution"]
    assert [node.get_type_name() for node in convolution_inputs] == ["FakeQuantize"]
    input_low, input_high = (float(convolution_inputs[0].input(i).get_source_output().get_node()
                                   .get_data()) for i in (1, 2))
    if activation == "prelu":
        assert input_low == 0
    else:
        assert input_low / (input_high - input_low) * 255 == pytest.approx(-128)
    run_precisions = {op.get_friendly_name(): op.get_rt_info()["runtimePrecision"].astype(str)
                      for op in compiled.get_runtime_model().get_ordered_ops()
                      if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert run_precisions and set(run_precisions.values()) <= {"u8", "i8"}, run_precisions


TEST_PAIRS = (("flir-test", 3), ("tno", 12))


@pytest.fixture(scope="module")
def real_pairs() -> tuple[np.ndarray, np.ndarray]:
    """(2, 192, 256) uint8 IR and visible stacks: crops of a flir-test and a TNO pair at their
    own resolution, neither among the calibration samples."""
    crops = [tuple(image[:192, :256] for image in read_pair(name, index))
             for name, index in TEST_PAIRS]
    return tuple(np.stack(images) for images in zip(*crops))


def test_int8_matches_fp32_on_real_pairs_within_the_reduced_precision_bound(real_pairs, tmp_path,
                                                                          monkeypatch):
    # Calibrate here rather than read the ranges shipped with the weights (tested below).
    monkeypatch.setattr(openvino_engine, "SHIPPED_RANGES", tmp_path / "nothing-shipped")
    samples = [image for pair in calibration_pairs() for image in pair]
    for name, index in TEST_PAIRS:
        for image in read_pair(name, index):
            assert not any(sample.shape[2:] == image.shape and np.array_equal(
                sample[0, 0], image.astype(np.float32) / 255) for sample in samples)
    ir, vis = (torch.from_numpy(x)[:, None].float() / 255 for x in real_pairs)
    model = load_checkpoint(resolve_weights(None))[0]
    reference = Fuser(model, RULE, "cpu", fold_bn=False).fuse_tensors(ir, vis)
    fuser = create_fuser(None, RULE, "openvino", "int8", "cpu", cache_dir=tmp_path)
    fused = fuser.fuse_tensors(ir, vis)
    levels = (to_uint8(fused).int() - to_uint8(reference).int()).abs().float()
    assert reference.std() > 0.05
    assert levels.mean().item() <= 0.5
    assert levels.max().item() <= 4
    # The ten 64 -> 64 convolutions run in int8; conv1 and conv7, which read or write the
    # images themselves, do not.
    runtime = fuser._compiled_for(tuple(ir.shape)).get_runtime_model()
    convolutions = [(op.get_output_partial_shape(0)[1].get_length(),
                     op.get_rt_info()["runtimePrecision"].astype(str))
                    for op in runtime.get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert sorted(channels for channels, precision in convolutions
                  if precision in ("u8", "i8")) == [64] * 10, convolutions
    assert [precision for channels, precision in convolutions if channels == 1] and all(
        precision not in ("u8", "i8") for channels, precision in convolutions if channels == 1)
    # Not the bf16 graph under another name: int8 rounds differently.
    bf16 = create_fuser(None, RULE, "openvino", "bf16" if cpu_supports_bf16() else "fp32", "cpu",
                        cache_dir=tmp_path)
    assert not torch.equal(fused, bf16.fuse_tensors(ir, vis))
    # The calibrated ranges are saved, and a second engine reads them instead of measuring.
    # (Its network comes from OpenVINO's blob cache, which rounds a little differently from a
    # fresh compile: within a gray level here.)
    saved = list((tmp_path / "openvino").glob("int8-ranges-*.json"))
    assert len(saved) == 1
    stamp = saved[0].stat().st_mtime_ns
    again = create_fuser(None, RULE, "openvino", "int8", "cpu", cache_dir=tmp_path)
    assert (to_uint8(again.fuse_tensors(ir, vis)).int() - to_uint8(fused).int()).abs().max() <= 1
    assert saved[0].stat().st_mtime_ns == stamp
    # A damaged saved file is measured again and replaced.
    saved[0].write_text("not json")
    third = create_fuser(None, RULE, "openvino", "int8", "cpu", cache_dir=tmp_path)
    # (Measured again, they may differ in float rounding: OpenVINO's compiled blob cache.)
    np.testing.assert_allclose(third._calibrated_ranges(), fuser._calibrated_ranges(), rtol=1e-5)
    assert json.loads(saved[0].read_text())[0]["convolution"]


def test_the_shipped_ranges_are_found_and_equal_a_fresh_calibration(tmp_path):
    import openvino as ov

    fuser = create_fuser(None, RULE, "openvino", "int8", "cpu", cache_dir=tmp_path)
    # A damaged file in the cache is passed over, not trusted and not a crash.
    damaged = tmp_path / "openvino" / fuser._ranges_file_name()
    damaged.parent.mkdir(parents=True, exist_ok=True)
    damaged.write_text('[{"convolution": ')
    shipped = fuser._calibrated_ranges()
    assert damaged.read_text() == '[{"convolution": ', (
        "no shipped int8 ranges match the shipped weights: copy the int8-ranges-*.json the "
        "engine writes into its cache folder to models/ (and delete the stale one)")
    model = fuser._model_for_batch(1)
    measured = input_ranges(ov.Core(), model, calibration_pairs())
    np.testing.assert_allclose(shipped, measured, rtol=1e-5, atol=1e-6)
    # A record of another conversion (other convolution names) is not used.
    record = ranges_record(model, measured)
    assert ranges_from_record(model, record) == [tuple(pair) for pair in measured]
    record[3]["convolution"] = "convolution_99"
    assert ranges_from_record(model, record) is None
    assert ranges_from_record(model, record[:-1]) is None


def test_int8_is_refused_by_other_engines_and_without_calibration_pairs(tmp_path):
    for engine in ("eager", "compile"):
        with pytest.raises(StreamFuseError, match="precision int8 runs on the openvino engine") as error:
            create_fuser(None, RULE, engine, "int8", "cpu")
        assert "\n" not in str(error.value)
    with pytest.raises(StreamFuseError, match="no IR/visible pairs to calibrate on in .*empty"):
        calibration_pairs(tmp_path / "empty")
