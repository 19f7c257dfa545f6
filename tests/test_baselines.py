"""Classical fusion baselines against straightforward NumPy references, on random and real pairs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_pair
from streamfuse import metrics
from streamfuse.baselines import average_fusion, box_base_detail, two_scale_fusion
from streamfuse.errors import StreamFuseError


def random_pair(shape, seed):
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, shape).astype(np.uint8) for _ in range(2))


def real_pair(shape, index=4, top=60, left=40):
    ir, vis = read_pair("tno", index)
    h, w = shape
    ir, vis = ir[top : top + h, left : left + w], vis[top : top + h, left : left + w]
    assert ir.shape == shape, "crop outside the image"
    return ir, vis


@pytest.fixture(params=["random", "tno"])
def pair(request):
    if request.param == "random":
        return random_pair((40, 52), seed=21)
    return real_pair((40, 52))


def loop_box_sum(image, radius):
    """Integer sum over a (2r+1)^2 window; borders mirrored without the edge (np.pad 'reflect')."""
    padded = np.pad(image.astype(np.int64), radius, mode="reflect")
    size = 2 * radius + 1
    out = np.zeros(image.shape, dtype=np.int64)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = padded[i : i + size, j : j + size].sum()
    return out


def loop_two_scale(ir, vis, radius):
    """Fused float image before rounding: mean of bases plus the larger-magnitude detail.

    Details are compared as exact integers (area * detail) so that ties are ties.
    """
    area = (2 * radius + 1) ** 2
    sum_ir, sum_vis = loop_box_sum(ir, radius), loop_box_sum(vis, radius)
    fused = np.zeros(ir.shape)
    for i in range(ir.shape[0]):
        for j in range(ir.shape[1]):
            a = int(ir[i, j]) * area - int(sum_ir[i, j])
            b = int(vis[i, j]) * area - int(sum_vis[i, j])
            detail = a if abs(a) > abs(b) else b if abs(b) > abs(a) else (a + b) / 2
            fused[i, j] = ((sum_ir[i, j] + sum_vis[i, j]) / 2 + detail) / area
    return fused


def test_average_fusion_rounds_the_mean(pair):
    ir, vis = pair
    fused = average_fusion(ir, vis)
    assert fused.dtype == np.uint8 and fused.shape == ir.shape
    expected = np.rint((ir.astype(np.float64) + vis) / 2)  # exact halves go to even
    np.testing.assert_array_equal(fused, expected)


def test_box_decomposition_matches_loops(pair):
    ir, _ = pair
    base, detail = box_base_detail(ir, radius=4)
    np.testing.assert_allclose(base, loop_box_sum(ir, 4) / 81, rtol=0, atol=1e-9)
    np.testing.assert_allclose(base + detail, ir, rtol=0, atol=1e-9)


@pytest.mark.parametrize("radius", [3, 17])
def test_two_scale_fusion_matches_loops(pair, radius):
    ir, vis = pair
    fused = two_scale_fusion(ir, vis, radius=radius)
    assert fused.dtype == np.uint8 and fused.shape == ir.shape
    reference = loop_two_scale(ir, vis, radius)
    np.testing.assert_array_equal(fused, np.clip(np.rint(reference), 0, 255))


def test_two_scale_fusion_of_one_image_twice_is_that_image(pair):
    ir, _ = pair
    np.testing.assert_array_equal(two_scale_fusion(ir, ir), ir)


def test_two_scale_fusion_ignores_input_order(pair):
    ir, vis = pair
    np.testing.assert_array_equal(two_scale_fusion(ir, vis), two_scale_fusion(vis, ir))


def test_two_scale_fusion_keeps_more_detail_than_the_average():
    ir, vis = read_pair("tno", 4)
    average = average_fusion(ir, vis)
    two_scale = two_scale_fusion(ir, vis)
    assert metrics.spatial_frequency(two_scale) > metrics.spatial_frequency(average)
    assert metrics.average_gradient(two_scale) > metrics.average_gradient(average)


def test_bad_inputs_raise_streamfuse_errors():
    ir, vis = random_pair((20, 20), seed=0)
    with pytest.raises(StreamFuseError, match="uint8"):
        average_fusion(ir.astype(np.float32), vis)
    with pytest.raises(StreamFuseError, match="uint8"):
        two_scale_fusion(ir, np.dstack([vis] * 3))
    with pytest.raises(StreamFuseError, match="differ in shape"):
        two_scale_fusion(ir, vis[:, :10])
    with pytest.raises(StreamFuseError, match="radius"):
        two_scale_fusion(ir, vis, radius=0)
