"""Box and guided filters against literal float64 NumPy versions, on random and real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fusion_reference as ref
from conftest import read_pair
from streamfuse import filters
from streamfuse.filters import box_filter, guided_filter

# float32 results against float64 references: values here are O(1), so 1e-4 leaves a wide
# margin over float32 rounding (observed errors are ~1e-7) while any wrong window, border
# count or formula shows up as errors of 1e-2 or more.
ATOL = 1e-4
# Full-size frames: direct window sums stay near 1e-6 on [0, 1] images, where a float32 2-D
# integral image (cumulative sums over the whole frame) is off by ~2e-4 at radius 7.
ATOL_FULL_FRAME = 1e-5


pytestmark = pytest.mark.usefixtures("single_thread")

def _random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _real_crop(set_name: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A (H, W) crop from the middle of a real pair, both as float in [0, 1]."""
    ir, vis = read_pair(set_name, index)
    top = (ir.shape[0] - size[0]) // 2
    left = (ir.shape[1] - size[1]) // 2
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    return ir[window] / 255.0, vis[window] / 255.0


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).float()[None, None]


@pytest.mark.parametrize("radius", [0, 1, 4, 30])
def test_box_filter_matches_window_means_on_random_maps(radius):
    # 37x53 (odd) with radius 30: windows wider than the image on both axes are cut.
    x = _random((2, 3, 37, 53), seed=radius) * 4 - 2
    out = box_filter(x, radius)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_allclose(out.numpy(), ref.box_mean(x.numpy(), radius), rtol=0, atol=ATOL)


def test_box_filter_matches_window_means_on_real_crop():
    ir, vis = _real_crop("tno", 4, (37, 53))
    image = np.stack([ir, vis])[None]
    out = box_filter(torch.from_numpy(image).float(), 3)
    np.testing.assert_allclose(out.numpy(), ref.box_mean(image, 3), rtol=0, atol=ATOL)


@pytest.mark.parametrize("radius", [7, 45])
def test_box_filter_keeps_float32_precision_on_full_frames(radius):
    ir, _ = read_pair("tno", 0)
    assert ir.shape[0] * ir.shape[1] >= 640 * 512, "needs a frame at least 640x512"
    image = ir / 255.0
    out = box_filter(_as_tensor(image), radius)[0, 0].double().numpy()
    expected = ref.box_mean_integral(image, radius)
    np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL_FULL_FRAME)


@pytest.mark.parametrize("radius", [1, 7])
def test_box_filter_convolution_and_pooling_agree_on_a_real_frame(monkeypatch, radius):
    # float32 on the CPU sums by depthwise convolution; float64 and exported graphs pool.
    ir, vis = read_pair("flir-test", 3)
    frames = torch.from_numpy(np.stack([ir, vis, 255 - ir, vis * 0.5])).float()[None] / 255
    assert filters._sums_by_convolution(frames)
    assert not filters._sums_by_convolution(frames.double())
    by_convolution = box_filter(frames, radius)
    monkeypatch.setattr(filters, "_sums_by_convolution", lambda x: False)
    by_pooling = box_filter(frames, radius)
    # The same sums in the same order here; 1e-6 allows another summation order elsewhere.
    torch.testing.assert_close(by_convolution, by_pooling, rtol=0, atol=1e-6)
    expected = ref.box_mean_integral(frames[0, 1].double().numpy(), radius)
    np.testing.assert_allclose(by_convolution[0, 1].numpy(), expected, rtol=0, atol=ATOL_FULL_FRAME)


def test_box_filter_rejects_negative_radius():
    with pytest.raises(ValueError, match="radius"):
        box_filter(torch.ones(1, 1, 4, 4), -1)


@pytest.mark.parametrize(("radius", "eps"), [(2, 1e-2), (7, 1e-3)])
def test_guided_filter_matches_windowed_least_squares_on_random_maps(radius, eps):
    guide = _random((2, 1, 23, 31), seed=10 + radius)
    src = _random((2, 3, 23, 31), seed=20 + radius) * 2 - 1
    out = guided_filter(guide, src, radius, eps)
    assert out.shape == src.shape
    expected = ref.guided_filter(guide.numpy(), src.numpy(), radius, eps)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("set_name", "index"), [("tno", 4), ("flir-test", 0)])
def test_guided_filter_matches_windowed_least_squares_on_real_crops(set_name, index):
    ir, vis = _real_crop(set_name, index, (29, 41))
    out = guided_filter(_as_tensor(ir), _as_tensor(vis), 5, 1e-2)
    expected = ref.guided_filter(ir[None, None], vis[None, None], 5, 1e-2)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=ATOL)


def test_guided_filter_keeps_float32_precision_on_full_frames():
    ir, vis = read_pair("tno", 0)
    guide, src = ir / 255.0, vis / 255.0
    radius, eps = 7, 1e-2
    out = guided_filter(_as_tensor(guide), _as_tensor(src), radius, eps)[0, 0].double().numpy()
    # He's Algorithm 1 in float64 (the windowed solve is too slow at this size).
    mean_guide = ref.box_mean_integral(guide, radius)
    mean_src = ref.box_mean_integral(src, radius)
    var_guide = ref.box_mean_integral(guide * guide, radius) - mean_guide**2
    cov = ref.box_mean_integral(guide * src, radius) - mean_guide * mean_src
    slope = cov / (var_guide + eps)
    offset = mean_src - slope * mean_guide
    expected = (
        ref.box_mean_integral(slope, radius) * guide + ref.box_mean_integral(offset, radius)
    )
    np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL_FULL_FRAME)


def test_gray_guide_broadcasts_over_channels():
    guide = _random((2, 1, 19, 24), seed=3)
    src = _random((2, 4, 19, 24), seed=4)
    together = guided_filter(guide, src, 3, 1e-2)
    one_by_one = torch.cat(
        [guided_filter(guide, src[:, c : c + 1], 3, 1e-2) for c in range(src.shape[1])], dim=1
    )
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=1e-6)
