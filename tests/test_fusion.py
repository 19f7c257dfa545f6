"""The DIDFuse fusion layer (eq. 7-17) against float64 NumPy references of each equation.

Feature maps come from random tensors and from real IR/visible crops passed through a fixed
random 3x3 convolution with tanh (like B, D) or PReLU (like f1, f2), 12 channels.

Saliency rules and 8-bit levels: eq. 9 needs the activity map rounded to integer levels. The
float32 and float64 scaled values differ by ~1e-5, so a pixel lying that close to a .5 rounding
boundary can land in the neighbouring level and move every saliency value slightly. The
weight/fusion references therefore take the levels from ``quantize_activity`` (the float32
definition under test); that function is checked on its own against the float64 definition in
``test_quantized_levels_match_float64_definition``, where a level may differ by one only at
pixels within 1e-3 of a boundary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fusion_reference as ref
from conftest import read_pair
from streamfuse.errors import StreamFuseError
from streamfuse.fusion import (
    MAP_NAMES,
    RULES,
    FusionConfig,
    FusionLayer,
    cam_weights,
    fuse_maps,
    l1_activity,
    l1_weights,
    quantize_activity,
    saliency_map,
    saliency_weights,
)

# float32 results against float64 references (maps and weights are O(1)): float32 rounding
# gives ~1e-6; wrong windows, guards or formulas give 1e-3 and more.
ATOL = 1e-4
CHANNELS = 12
SIZE = (37, 53)
# Small enough that a 37x53 map still has flat and edge windows; the defaults are for frames.
SMALL_RADIUS = 4
CONFIG = FusionConfig(gamma=0.3, guided_radius=SMALL_RADIUS, guided_eps=1e-2, eps=1e-6)


pytestmark = pytest.mark.usefixtures("single_thread")

def encode_like(image: np.ndarray, activation: str, seed: int) -> torch.Tensor:
    """(H, W) uint8 image -> (1, CHANNELS, H, W) float32 maps from a fixed random 3x3 conv.

    Reflection padding, as the network's first layer, so a constant image gives constant maps.
    """
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(CHANNELS, 1, 3, 3, generator=generator) / 3
    bias = torch.randn(CHANNELS, generator=generator) * 0.2
    x = torch.from_numpy(image).float().div(255)[None, None]
    response = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)
    if activation == "tanh":
        return torch.tanh(2 * response)
    return F.prelu(response, torch.tensor([0.25]))


def real_maps(set_name: str, index: int, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """IR and visible maps of a SIZE crop from the middle of a real pair."""
    ir, vis = read_pair(set_name, index)
    top = (ir.shape[0] - SIZE[0]) // 2
    left = (ir.shape[1] - SIZE[1]) // 2
    window = (slice(top, top + SIZE[0]), slice(left, left + SIZE[1]))
    return encode_like(ir[window], activation, seed=1), encode_like(vis[window], activation, seed=1)


def random_maps(activation: str, seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, CHANNELS, *SIZE)
    ir, vis = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    # Different scales so that the weights are far from 0.5.
    ir = ir * torch.linspace(0.2, 2.0, CHANNELS).view(1, -1, 1, 1)
    if activation == "tanh":
        return torch.tanh(ir), torch.tanh(vis)
    return F.prelu(ir, torch.tensor([0.25])), F.prelu(vis, torch.tensor([0.25]))


MAP_PAIRS = {
    "random-tanh": lambda: random_maps("tanh", seed=0),
    "random-prelu": lambda: random_maps("prelu", seed=1),
    "tno-tanh": lambda: real_maps("tno", 4, "tanh"),
    "flir-prelu": lambda: real_maps("flir-test", 0, "prelu"),
}


@pytest.fixture(params=sorted(MAP_PAIRS))
def map_pair(request) -> tuple[torch.Tensor, torch.Tensor]:
    return MAP_PAIRS[request.param]()


def levels_of(maps: torch.Tensor) -> np.ndarray:
    return quantize_activity(l1_activity(maps)).numpy()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_l1_weights_match_eq7(map_pair, memory_format):
    ir, vis = map_pair
    w_ir, w_vis = l1_weights(
        ir.contiguous(memory_format=memory_format), vis.contiguous(memory_format=memory_format), CONFIG.eps
    )
    assert w_ir.shape == (ir.shape[0], 1, *ir.shape[2:])
    ref_ir, ref_vis = ref.l1_weights(ir.numpy(), vis.numpy(), CONFIG.eps)
    np.testing.assert_allclose(w_ir.numpy(), ref_ir, rtol=0, atol=ATOL)
    np.testing.assert_allclose(w_vis.numpy(), ref_vis, rtol=0, atol=ATOL)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_cam_weights_match_eq15(map_pair, memory_format):
    ir, vis = map_pair
    w_ir, w_vis = cam_weights(
        ir.contiguous(memory_format=memory_format), vis.contiguous(memory_format=memory_format), CONFIG.eps
    )
    assert w_ir.shape == (ir.shape[0], ir.shape[1], 1, 1)
    ref_ir, ref_vis = ref.cam_weights(ir.numpy(), vis.numpy(), CONFIG.eps)
    np.testing.assert_allclose(w_ir.numpy(), ref_ir, rtol=0, atol=ATOL)
    np.testing.assert_allclose(w_vis.numpy(), ref_vis, rtol=0, atol=ATOL)


def test_quantized_levels_match_float64_definition(map_pair):
    for maps in map_pair:
        levels = levels_of(maps)
        scaled = ref.scaled_activity(ref.l1_activity(maps.numpy()))
        expected = np.round(scaled)
        assert levels.dtype == np.int64
        assert levels.min() == 0 and levels.max() == 255
        near_boundary = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3
        np.testing.assert_array_equal(levels[~near_boundary], expected[~near_boundary])
        assert np.all(np.abs(levels - expected)[near_boundary] <= 1)


@pytest.mark.parametrize("tiles", [1, 7, 64])
def test_saliency_map_matches_eq9(map_pair, tiles):
    # tiles > 1 is the CUDA counting (per-tile histograms summed); 7 does not divide the pixels.
    for maps in map_pair:
        levels = quantize_activity(l1_activity(maps))
        saliency = saliency_map(levels, tiles=tiles)
        np.testing.assert_allclose(
            saliency.numpy(), ref.saliency_map(levels.numpy()), rtol=0, atol=ATOL
        )


def test_saliency_weights_match_eq9_to_11(map_pair):
    ir, vis = map_pair
    w_ir, w_vis = saliency_weights(ir, vis, SMALL_RADIUS, CONFIG.guided_eps, CONFIG.eps)
    assert w_ir.shape == (ir.shape[0], 1, *ir.shape[2:])
    ref_ir, ref_vis = ref.saliency_weights(
        levels_of(ir), levels_of(vis), SMALL_RADIUS, CONFIG.guided_eps, CONFIG.eps
    )
    np.testing.assert_allclose(w_ir.numpy(), ref_ir, rtol=0, atol=ATOL)
    np.testing.assert_allclose(w_vis.numpy(), ref_vis, rtol=0, atol=ATOL)
    # Not trivially 0.5 everywhere: the maps really differ between cameras.
    assert ref_ir.std() > 1e-3


@pytest.mark.parametrize("rule", RULES)
def test_fuse_maps_matches_reference(rule, map_pair):
    ir, vis = map_pair
    config = dataclasses.replace(CONFIG, rule=rule)
    fused = fuse_maps(ir, vis, config)
    assert fused.shape == ir.shape and fused.dtype == ir.dtype
    expected = ref.fuse(
        ir.numpy(), vis.numpy(), rule, config.gamma, config.guided_radius, config.guided_eps,
        config.eps, levels=(levels_of(ir), levels_of(vis)),
    )
    np.testing.assert_allclose(fused.numpy(), expected, rtol=0, atol=ATOL)


def _all_weights(ir: torch.Tensor, vis: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    return {
        "l1": l1_weights(ir, vis, CONFIG.eps),
        "saliency": saliency_weights(ir, vis, SMALL_RADIUS, CONFIG.guided_eps, CONFIG.eps),
        "cam": cam_weights(ir, vis, CONFIG.eps),
    }


def _assert_convex(weights: dict[str, tuple[torch.Tensor, ...]]) -> None:
    for name, (w_ir, w_vis) in weights.items():
        assert torch.isfinite(w_ir).all() and torch.isfinite(w_vis).all(), name
        assert w_ir.min() >= 0 and w_ir.max() <= 1, name
        assert w_vis.min() >= 0 and w_vis.max() <= 1, name
        torch.testing.assert_close(w_ir + w_vis, torch.ones_like(w_ir), rtol=0, atol=1e-6)


def test_weights_are_convex(map_pair):
    ir, vis = map_pair
    _assert_convex(_all_weights(ir, vis))
    # One camera far stronger than the other drives weights to the edge of [0, 1].
    _assert_convex(_all_weights(ir * 1e4, vis * 1e-4))


def test_guided_filter_undershoot_is_clamped_before_renormalising():
    """A dead IR pixel beside an edge: the local linear model extrapolates below 0 there."""
    ir_activity = np.full(SIZE, 0.5)
    ir_activity[:, 27:31] = 0.7
    ir_activity[0, 0] = 1.0
    ir_activity[18, 26] = 0.0
    vis_activity = np.zeros(SIZE)
    vis_activity[:, 23:27] = 1.0
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1, 1)
    ir = torch.from_numpy(ir_activity).float()[None, None] / 4 * signs
    vis = torch.from_numpy(vis_activity).float()[None, None] / 4 * signs
    levels_ir, levels_vis = levels_of(ir), levels_of(vis)
    raw_ir = ref.share(ref.saliency_map(levels_ir), ref.saliency_map(levels_vis), CONFIG.eps)
    unclamped = ref.guided_filter(levels_ir / 255.0, raw_ir, SMALL_RADIUS, CONFIG.guided_eps)
    assert unclamped.min() < -0.1, "the case must make the guided filter undershoot"
    w_ir, w_vis = saliency_weights(ir, vis, SMALL_RADIUS, CONFIG.guided_eps, CONFIG.eps)
    _assert_convex({"saliency": (w_ir, w_vis)})
    ref_ir, _ = ref.saliency_weights(
        levels_ir, levels_vis, SMALL_RADIUS, CONFIG.guided_eps, CONFIG.eps
    )
    np.testing.assert_allclose(w_ir.numpy(), ref_ir, rtol=0, atol=ATOL)

def _constant_maps() -> dict[str, torch.Tensor]:
    black = np.zeros(SIZE, np.uint8)
    white = np.full(SIZE, 255, np.uint8)
    return {
        "black": encode_like(black, "tanh", seed=1),
        "white": encode_like(white, "prelu", seed=1),
        "zeros": torch.zeros(1, CHANNELS, *SIZE),
    }


@pytest.mark.parametrize("ir_name", ["black", "white", "zeros"])
@pytest.mark.parametrize("vis_name", ["black", "white", "zeros"])
def test_constant_inputs_give_finite_weights_and_maps(ir_name, vis_name):
    maps = _constant_maps()
    ir, vis = maps[ir_name], maps[vis_name]
    assert (ir == ir[..., :1, :1]).all(), "a constant image must give constant maps"
    _assert_convex(_all_weights(ir, vis))
    # Constant activity has saliency 0 (eq. 9 with a one-bin histogram).
    assert torch.all(saliency_map(quantize_activity(l1_activity(ir))) == 0)
    for rule in RULES:
        fused = fuse_maps(ir, vis, dataclasses.replace(CONFIG, rule=rule))
        assert torch.isfinite(fused).all(), rule


def test_all_zero_maps_split_evenly_and_fuse_to_zero():
    zeros = torch.zeros(2, CHANNELS, *SIZE)
    for name, (w_ir, w_vis) in _all_weights(zeros, zeros).items():
        torch.testing.assert_close(w_ir, torch.full_like(w_ir, 0.5), rtol=0, atol=1e-6)
        torch.testing.assert_close(w_vis, torch.full_like(w_vis, 0.5), rtol=0, atol=1e-6)
    for rule in RULES:
        fused = fuse_maps(zeros, zeros, dataclasses.replace(CONFIG, rule=rule))
        assert torch.all(fused == 0), rule


@pytest.mark.parametrize("rule", RULES)
def test_batch_equals_per_sample(rule):
    tno_ir, tno_vis = real_maps("tno", 4, "tanh")
    flir_ir, flir_vis = real_maps("flir-test", 0, "tanh")
    random_ir, random_vis = random_maps("tanh", seed=2, batch=1)
    ir = torch.cat([tno_ir, flir_ir, random_ir])
    vis = torch.cat([tno_vis, flir_vis, random_vis])
    config = dataclasses.replace(CONFIG, rule=rule)
    batched = fuse_maps(ir, vis, config)
    for i in range(ir.shape[0]):
        alone = fuse_maps(ir[i : i + 1], vis[i : i + 1], config)
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=1e-6)


def _layer_inputs(seed: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    pairs = [random_maps(activation, seed + i, batch=1)
             for i, activation in enumerate(["prelu", "prelu", "tanh", "tanh"])]
    return tuple(ir for ir, _ in pairs), tuple(vis for _, vis in pairs)


def test_fusion_layer_applies_rule_to_listed_maps_and_sums_the_rest():
    ir_features, vis_features = _layer_inputs(seed=5)
    config = dataclasses.replace(CONFIG, apply_to=("base", "detail"))
    fused = FusionLayer(config)(ir_features, vis_features)
    assert len(fused) == len(MAP_NAMES)
    for name, ir, vis, out in zip(MAP_NAMES, ir_features, vis_features, fused):
        if name in ("base", "detail"):
            expected = fuse_maps(ir, vis, config)
            assert not torch.allclose(expected, ir + vis)
        else:
            expected = ir + vis
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_fusion_layer_defaults_to_saliency_cam_on_all_maps():
    ir_features, vis_features = _layer_inputs(seed=9)
    layer = FusionLayer()
    assert layer.config.rule == "saliency+cam"
    assert layer.config.apply_to == MAP_NAMES
    fused = layer(ir_features, vis_features)
    for ir, vis, out in zip(ir_features, vis_features, fused):
        torch.testing.assert_close(out, fuse_maps(ir, vis, FusionConfig()), rtol=0, atol=0)


@pytest.mark.parametrize("rule", RULES)
def test_fusion_layer_weights_all_maps_at_once_like_one_map_at_a_time(rule):
    """The layer computes spatial weights for its maps stacked as channels; every plane must come
    out as if its map pair were fused alone (also per sample of a batch of 2, and for a subset)."""
    pairs = [random_maps(activation, 40 + i, batch=2)
             for i, activation in enumerate(["prelu", "prelu", "tanh", "tanh"])]
    ir_features, vis_features = tuple(ir for ir, _ in pairs), tuple(vis for _, vis in pairs)
    for apply_to in (MAP_NAMES, ("f2", "detail")):
        config = dataclasses.replace(CONFIG, rule=rule, apply_to=apply_to)
        fused = FusionLayer(config)(ir_features, vis_features)
        for name, ir, vis, out in zip(MAP_NAMES, ir_features, vis_features, fused):
            alone = fuse_maps(ir, vis, config if name in apply_to else dataclasses.replace(config, rule="sum"))
            torch.testing.assert_close(out, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rule", RULES)
def test_eager_scratch_maps_give_the_same_bits_as_fresh_ones(rule, dtype):
    """Eager channels_last maps: |x| (once per map, in float32 for bf16 maps) and the full-size
    mixing weights go into reused scratch maps. Recording gradients turns that off (fresh
    tensors, the same arithmetic), so both must agree to the bit, and leave the input maps as
    they were."""
    pairs = [random_maps(activation, 60 + i, batch=2)
             for i, activation in enumerate(["prelu", "prelu", "tanh", "tanh"])]
    ir_features, vis_features = (tuple(pair[camera].to(dtype).contiguous(
        memory_format=torch.channels_last) for pair in pairs) for camera in (0, 1))
    originals = [x.clone() for x in (*ir_features, *vis_features)]
    for apply_to in (MAP_NAMES, ("f2", "detail")):
        layer = FusionLayer(dataclasses.replace(CONFIG, rule=rule, apply_to=apply_to))
        with torch.no_grad():
            reused = layer(ir_features, vis_features)
        recorded = [x.detach().requires_grad_() for x in (*ir_features, *vis_features)]
        fresh = layer(tuple(recorded[:4]), tuple(recorded[4:]))
        for out, expected in zip(reused, fresh):
            torch.testing.assert_close(out, expected.detach(), rtol=0, atol=0)
    for x, original in zip((*ir_features, *vis_features), originals):
        torch.testing.assert_close(x, original, rtol=0, atol=0)


def test_fusion_layer_rejects_wrong_number_of_maps():
    ir_features, vis_features = _layer_inputs(seed=5)
    with pytest.raises(StreamFuseError, match="expected 4 maps"):
        FusionLayer()(ir_features[:3], vis_features)


def test_unknown_rule_lists_the_valid_ones():
    with pytest.raises(StreamFuseError) as error:
        FusionConfig(rule="max")
    message = str(error.value)
    assert "unknown fusion rule 'max' (--rule" in message and "saliency+cam" in message
    assert all(rule in message for rule in RULES)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gamma", 1.5),
        ("guided_radius", -1),
        ("guided_radius", 2.5),
        ("guided_eps", 0.0),
        ("eps", -1e-6),
        ("apply_to", ("base", "texture")),
        ("apply_to", "base"),
    ],
)
def test_invalid_settings_name_the_field(field, value):
    with pytest.raises(StreamFuseError, match=f"FusionConfig.{field}"):
        FusionConfig(**{field: value})


def test_apply_to_list_is_stored_as_tuple():
    assert FusionConfig(apply_to=["base", "detail"]).apply_to == ("base", "detail")


def test_mismatched_map_shapes_are_rejected():
    with pytest.raises(StreamFuseError, match="differ"):
        fuse_maps(torch.ones(1, 4, 8, 8), torch.ones(1, 4, 8, 9), CONFIG)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps_get_float32_weights(dtype):
    ir, vis = real_maps("tno", 4, "prelu")
    ir_half, vis_half = ir.to(dtype), vis.to(dtype)
    ir_full, vis_full = ir_half.float(), vis_half.float()
    for name, (w_ir, _) in _all_weights(ir_half, vis_half).items():
        assert w_ir.dtype == torch.float32, name
        expected = _all_weights(ir_full, vis_full)[name][0]
        torch.testing.assert_close(w_ir, expected, rtol=0, atol=1e-6)
    fused = fuse_maps(ir_half, vis_half, CONFIG)
    assert fused.dtype == dtype
    torch.testing.assert_close(
        fused.float(), fuse_maps(ir_full, vis_full, CONFIG), rtol=1e-2, atol=1e-2
    )


def test_autocast_leaves_the_weights_in_float32():
    ir, vis = real_maps("flir-test", 0, "tanh")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weights = _all_weights(ir, vis)
        fused = fuse_maps(ir, vis, CONFIG)
    for name, (w_ir, _) in weights.items():
        assert w_ir.dtype == torch.float32, name
        torch.testing.assert_close(w_ir, _all_weights(ir, vis)[name][0], rtol=0, atol=0)
    torch.testing.assert_close(fused, fuse_maps(ir, vis, CONFIG), rtol=0, atol=0)
