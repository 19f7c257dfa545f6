"""int8 convolutions for the OpenVINO engine: FakeQuantize on the wide convolutions of a
converted FusionNet, with input ranges measured on real pairs.

The ten convolutions that read and write 64-channel maps (conv2-conv4 of each camera's encoder,
conv5 and conv6 of the decoder, each of these two split in halves by the graph rewrites) carry
almost all of the network's 243 GFLOP per 640x512 pair. Each gets a FakeQuantize on its input
(per tensor, 256 levels over the range the input took on calibration pairs, widened by
``RANGE_MARGIN``, zero exactly on a level) and on its weights (per output channel, symmetric,
255 levels); OpenVINO's low-precision transformations then run them as int8 convolutions
(AMX/VNNI), and everything else stays in the engine's float precision. Inputs whose range is
lopsided are quantized shifted onto a range starting at 0, so that no convolution has a zero
point (:func:`quantize_convolution`: the same levels, about 1.2x faster). conv1 (one input
channel) and conv7 (one output channel, the fused image itself) are left alone: together under
1 % of the work. Quantizing conv7's input as well had put the whole int8 rounding straight into
the output: on uniform noise it reached 6 gray levels from fp32 where it now stays within 3, and
real pairs' mean error was 10-20 % higher (``bench/int8_extremes.py``).

The ranges are calibrated once per network, on the repository's sample pairs (real FLIR and TNO
frames), and saved beside the converted model. A map that leaves the calibrated range is clipped
to it, so the output is checked against fp32 on real pairs like the other reduced precisions
(``tests/test_int8.py``; ``bench/openvino_variants.py`` on flir-test, TNO and flir-train, and
``bench/int8_extremes.py`` on inputs unlike them).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from streamfuse.errors import StreamFuseError
from streamfuse.fuser import REPO_ROOT

CALIBRATION_PAIRS = REPO_ROOT / "samples" / "pairs"
ACTIVATION_LEVELS = 256
WEIGHT_LEVELS = 255  # symmetric: -127..127 steps, zero exact
WIDE_CHANNELS = 64
# Part of the key of saved ranges: which convolutions get one (2: conv7 no longer does).
RANGES_FORMAT = 2
# Ranges of the shipped weights ship beside them, so that a first start does not spend ~8 s
# calibrating; a file there is used only when its key and convolution names match.
SHIPPED_RANGES = REPO_ROOT / "models"
# The calibrated ranges are widened by this factor: four sample pairs do not see every scene's
# extremes, and a clipped map costs more than a coarser step. On the first 40 pairs of
# flir-test and of TNO (bench/openvino_variants.py): 1.0 left 2 TNO pairs 6 gray levels from
# fp32 on 10-17 pixels; 1.25 keeps all 80 within 3 levels, the worst pair's mean at 0.45;
# 1.5 and 2 pushed FLIR means to 0.5 and beyond on a sample of them.
RANGE_MARGIN = 1.25


def wide_convolutions(model) -> list:
    """The Convolution nodes of an OpenVINO ``model`` reading and writing at least 64
    channels, in order."""
    return [node for node in model.get_ordered_ops() if node.get_type_name() == "Convolution"
            and min(node.input(1).get_partial_shape()[0].get_length(),
                    node.input(1).get_partial_shape()[1].get_length()) >= WIDE_CHANNELS]


def calibration_pairs(folder: Path = CALIBRATION_PAIRS) -> list[list[np.ndarray]]:
    """The pairs of ``folder`` (``ir/`` beside ``vis/``, matched by name) as ``[ir, vis]``
    (1, 1, H, W) float32 in [0, 1]."""
    ir_paths = sorted((folder / "ir").glob("*")) if (folder / "ir").is_dir() else []
    pairs = []
    for ir_path in ir_paths:
        vis_path = folder / "vis" / ir_path.name
        images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (ir_path, vis_path)]
        if any(image is None for image in images) or images[0].shape != images[1].shape:
            continue
        pairs.append([image[None, None].astype(np.float32) / 255 for image in images])
    if not pairs:
        raise StreamFuseError(
            f"precision int8: no IR/visible pairs to calibrate on in {folder} (ir/ and vis/ with "
            "matching names); restore samples/pairs from the repository or use --precision bf16"
        )
    return pairs


def input_ranges(core, model, pairs: list[list[np.ndarray]]) -> list[tuple[float, float]]:
    """``(min, max)`` over ``pairs`` of each wide convolution's input, from an fp32 run of
    ``model`` (``(B, 1, H, W)`` inputs, height and width dynamic; B must be 1 or dynamic)."""
    probe = model.clone()
    sources = [node.input(0).get_source_output() for node in wide_convolutions(probe)]
    probe.add_outputs(sources)

    def key(output) -> tuple[str, int]:
        return output.get_node().get_friendly_name(), output.get_index()
    # add_outputs gives one Result per distinct tensor: f2, for one, feeds three convolutions.
    position = {key(result.input(0).get_source_output()): index
                for index, result in enumerate(probe.get_results())}
    compiled = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    low, high = np.full(len(sources), np.inf), np.full(len(sources), -np.inf)
    for pair in pairs:
        outputs = compiled(pair).to_tuple()
        for index, source in enumerate(sources):
            values = outputs[position[key(source)]]
            low[index] = min(low[index], float(values.min()))
            high[index] = max(high[index], float(values.max()))
    return [(float(a), float(b)) for a, b in zip(low, high)]


def ranges_record(model, ranges: list[tuple[float, float]]) -> list[dict]:
    """``ranges`` as saved: each with the name of the convolution of ``model`` it belongs to."""
    names = [node.get_friendly_name() for node in wide_convolutions(model)]
    if len(names) != len(ranges):
        raise ValueError(f"{len(ranges)} ranges for {len(names)} wide convolutions")
    return [{"convolution": name, "low": low, "high": high}
            for name, (low, high) in zip(names, ranges)]


def ranges_from_record(model, record: object) -> list[tuple[float, float]] | None:
    """The ranges of a saved ``record`` in the order of ``model``'s wide convolutions, or None
    when it names other convolutions (another conversion of the network) or is not a record."""
    names = [node.get_friendly_name() for node in wide_convolutions(model)]
    if not isinstance(record, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("low"), (int, float))
            and isinstance(entry.get("high"), (int, float)) for entry in record):
        return None
    if [entry.get("convolution") for entry in record] != names:
        return None
    return [(float(entry["low"]), float(entry["high"])) for entry in record]


def read_ranges(model, path: Path) -> list[tuple[float, float]] | None:
    """:func:`ranges_from_record` of the JSON file ``path``; None when it is missing or
    unreadable (a damaged file is calibrated again, not trusted)."""
    try:
        return ranges_from_record(model, json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def write_ranges(model, ranges: list[tuple[float, float]], path: Path) -> None:
    """Saves :func:`ranges_record` to ``path``, whole or not at all (a temporary file first, so
    a half-written file is never read back)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(ranges_record(model, ranges), indent=1))
    partial.replace(path)


def zero_on_a_level(low: float, high: float, levels: int = ACTIVATION_LEVELS) -> tuple[float, float]:
    """A quantization range covering ``[min(low, 0), high]`` with 0 exactly on one of its
    ``levels`` levels (the step kept): the maps are full of exact zeros (zero padding, the
    convolutions' border), and quantizing them to a small offset would bias every output."""
    low = min(low, 0.0)
    if high <= low:
        high = low + 1.0
    step = (high - low) / (levels - 1)
    low = -round(-low / step) * step
    return low, low + (levels - 1) * step


def fake_quantize(source, low, high, levels: int):
    """OpenVINO FakeQuantize of the output ``source`` onto ``levels`` levels of ``[low, high]``
    (floats or arrays broadcast per channel), output range equal to the input range."""
    import openvino.opset13 as ops

    low, high = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    return ops.fake_quantize(source, low, high, low, high, levels).output(0)


def quantized_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(magnitude, quantized)``: each output channel's largest ``|w|`` (O, 1, 1, 1), and the
    weights rounded onto the ``WEIGHT_LEVELS`` symmetric levels of ``[-magnitude, magnitude]``,
    as their FakeQuantize computes them."""
    magnitude = np.abs(weights).reshape(weights.shape[0], -1).max(axis=1)
    magnitude = np.maximum(magnitude, np.finfo(np.float32).tiny).reshape(-1, 1, 1, 1)
    step = magnitude / (WEIGHT_LEVELS // 2)
    return magnitude, np.clip(np.round(weights / step), -(WEIGHT_LEVELS // 2),
                              WEIGHT_LEVELS // 2) * step


def quantize_convolution(node, low: float, high: float) -> None:
    """Makes the OpenVINO Convolution ``node`` read its input on the 256 levels of
    ``[low, high]`` (``low <= 0`` on a level, see :func:`zero_on_a_level`) and its weights per
    output channel on symmetric levels, so that OpenVINO runs it in int8.

    The input is quantized without a zero point. A range symmetric about zero (a tanh map's,
    ``[-128, 127]`` steps) is signed int8 as it is, one starting at 0 unsigned. A lopsided one,
    such as a PReLU map's (about -3 to 12), would become unsigned int8 with a zero point, which
    OpenVINO convolves 1.4-1.9x slower on AMX (its per-layer profile at 640x512): see
    :func:`_shift_input_to_zero`.
    """
    weights = node.input(1).get_source_output()
    magnitude, rounded = quantized_weights(weights.get_node().get_data())
    quantized = fake_quantize(weights, -magnitude, magnitude, WEIGHT_LEVELS)
    step = (high - low) / (ACTIVATION_LEVELS - 1)
    if low == 0 or round(-low / step) == ACTIVATION_LEVELS // 2:
        source = node.input(0).get_source_output()
        node.input(0).replace_source_output(fake_quantize(source, low, high, ACTIVATION_LEVELS))
        node.input(1).replace_source_output(quantized)
    else:
        _shift_input_to_zero(node, low, high, quantized, rounded)


def _shift_input_to_zero(node, low: float, high: float, weights, rounded: np.ndarray) -> None:
    """Replaces the Convolution ``node`` by one whose input is quantized on ``[0, high - low]``
    (the same levels as ``[low, high]``, shifted by ``-low``), with ``low * sum(rounded)`` per
    output channel added back to its output. ``weights`` is the quantized weights' output,
    ``rounded`` their values. The zero border the convolution pads with is padded before the
    shift (a padded zero is ``-low`` after it), so the new convolution does not pad."""
    import openvino.opset13 as ops

    source = node.input(0).get_source_output()
    attributes = node.get_attributes()
    pads_begin, pads_end = list(attributes["pads_begin"]), list(attributes["pads_end"])
    if any(pads_begin + pads_end):
        source = ops.pad(source, np.array([0, 0, *pads_begin], np.int64),
                         np.array([0, 0, *pads_end], np.int64), "constant",
                         np.float32(0)).output(0)
    shifted = ops.subtract(source, ops.constant(np.float32(low))).output(0)
    convolution = ops.convolution(
        fake_quantize(shifted, 0.0, high - low, ACTIVATION_LEVELS), weights,
        attributes["strides"], [0, 0], [0, 0], attributes["dilations"])
    convolution.set_friendly_name(node.get_friendly_name())
    shift_back = low * rounded.reshape(rounded.shape[0], -1).sum(axis=1)
    output = ops.add(convolution, ops.constant(shift_back.astype(np.float32).reshape(1, -1, 1, 1)))
    for target in list(node.output(0).get_target_inputs()):
        target.replace_source_output(output.output(0))


def quantize_wide_convolutions(model, ranges: list[tuple[float, float]],
                               margin: float = RANGE_MARGIN):
    """Quantizes each of ``model``'s wide convolutions (:func:`quantize_convolution`), its
    input on its range of ``ranges`` widened by ``margin``, in place; returns ``model``."""
    convolutions = wide_convolutions(model)
    if len(convolutions) != len(ranges):
        raise ValueError(f"{len(ranges)} ranges for {len(convolutions)} wide convolutions")
    for node, (low, high) in zip(convolutions, ranges):
        quantize_convolution(node, *zero_on_a_level(low * margin, high * margin))
    model.validate_nodes_and_infer_types()
    return model
