"""Fusion metrics: hand-computable cases, invariances, loop references on random and real pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import read_pair
from streamfuse import metrics
from streamfuse.errors import StreamFuseError

RTOL = 1e-9


# ----------------------------------------------------------------- straightforward loop references


def loop_entropy(image):
    counts = {}
    for value in image.ravel():
        counts[int(value)] = counts.get(int(value), 0) + 1
    total = image.size
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def loop_std(image):
    h, w = image.shape
    mean = sum(float(image[i, j]) for i in range(h) for j in range(w)) / (h * w)
    squares = sum((float(image[i, j]) - mean) ** 2 for i in range(h) for j in range(w))
    return math.sqrt(squares / (h * w))


def loop_sf(image):
    x = image.astype(np.float64)
    h, w = x.shape
    row = sum((x[i, j] - x[i, j - 1]) ** 2 for i in range(h) for j in range(1, w)) / (h * (w - 1))
    col = sum((x[i, j] - x[i - 1, j]) ** 2 for i in range(1, h) for j in range(w)) / ((h - 1) * w)
    return math.sqrt(row + col)


def loop_ag(image):
    x = image.astype(np.float64)
    h, w = x.shape
    total = 0.0
    for i in range(1, h):
        for j in range(1, w):
            gh = x[i, j] - x[i, j - 1]
            gv = x[i, j] - x[i - 1, j]
            total += math.sqrt((gh * gh + gv * gv) / 2)
    return total / ((h - 1) * (w - 1))


def loop_corr(a, b):
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((p - ma) * (q - mb) for p, q in zip(a, b))
    den = math.sqrt(sum((p - ma) ** 2 for p in a) * sum((q - mb) ** 2 for q in b))
    return num / den


def loop_scd(fused, ir, vis):
    f, i, v = (x.astype(np.float64) for x in (fused, ir, vis))
    return loop_corr(f - v, i) + loop_corr(f - i, v)


def loop_mi_pair(a, b):
    joint = {}
    for p, q in zip(a.ravel(), b.ravel()):
        joint[(int(p), int(q))] = joint.get((int(p), int(q)), 0) + 1
    n = a.size
    pa, pb = {}, {}
    for (p, q), c in joint.items():
        pa[p] = pa.get(p, 0) + c / n
        pb[q] = pb.get(q, 0) + c / n
    return sum(c / n * math.log2((c / n) / (pa[p] * pb[q])) for (p, q), c in joint.items())


def loop_mi(fused, ir, vis):
    return loop_mi_pair(fused, ir) + loop_mi_pair(fused, vis)


def loop_convolve_same_zero(image, kernel):
    """MATLAB conv2(image, kernel, 'same') for a 3x3 kernel: flipped kernel, zero border."""
    h, w = image.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            total = 0.0
            for k in range(3):
                for m in range(3):
                    y, x = i - (k - 1), j - (m - 1)
                    if 0 <= y < h and 0 <= x < w:
                        total += kernel[k][m] * float(image[y, x])
            out[i, j] = total
    return out


def loop_qabf(fused, ir, vis):
    sobel_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    sobel_y = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]

    def strength_angle(image):
        sx = loop_convolve_same_zero(image, sobel_x)
        sy = loop_convolve_same_zero(image, sobel_y)
        g = np.zeros(image.shape)
        a = np.zeros(image.shape)
        for i in range(image.shape[0]):
            for j in range(image.shape[1]):
                g[i, j] = math.hypot(sx[i, j], sy[i, j])
                a[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, a

    gf, af = strength_angle(fused)
    num = den = 0.0
    for source in (ir, vis):
        gs, as_ = strength_angle(source)
        for i in range(source.shape[0]):
            for j in range(source.shape[1]):
                big, small = max(gs[i, j], gf[i, j]), min(gs[i, j], gf[i, j])
                ratio = small / big if big > 0 else 0.0
                match = 1 - abs(as_[i, j] - af[i, j]) / (math.pi / 2)
                q_g = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5)))
                q_a = 0.9879 / (1 + math.exp(-22 * (match - 0.8)))
                q = q_g * q_a
                num += q * gs[i, j]
                den += gs[i, j]
    return num / den


def gaussian_window(size, sigma):
    centre = (size - 1) / 2
    window = np.zeros((size, size))
    for y in range(size):
        for x in range(size):
            window[y, x] = math.exp(-((y - centre) ** 2 + (x - centre) ** 2) / (2 * sigma * sigma))
    return window / window.sum()


def loop_ssim_index(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    window = gaussian_window(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (window * pa).sum(), (window * pb).sum()
            va = (window * (pa - ma) ** 2).sum()
            vb = (window * (pb - mb) ** 2).sum()
            cov = (window * (pa - ma) * (pb - mb)).sum()
            numerator = (2 * ma * mb + c1) * (2 * cov + c2)
            values.append(numerator / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return sum(values) / len(values)


def loop_filter_valid(image, window):
    n = window.shape[0]
    h, w = image.shape[0] - n + 1, image.shape[1] - n + 1
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = (window * image[i : i + n, j : j + n]).sum()
    return out


def loop_vifp(ref, dist):
    """Sheikh & Bovik's vifp_mscale, pixel by pixel."""
    ref = ref.astype(np.float64)
    dist = dist.astype(np.float64)
    eps, noise = 1e-10, 2.0
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        window = gaussian_window(n, n / 5)
        if scale > 1:
            ref = loop_filter_valid(ref, window)[::2, ::2]
            dist = loop_filter_valid(dist, window)[::2, ::2]
        for i in range(ref.shape[0] - n + 1):
            for j in range(ref.shape[1] - n + 1):
                pr, pd = ref[i : i + n, j : j + n], dist[i : i + n, j : j + n]
                mr, md = (window * pr).sum(), (window * pd).sum()
                s1 = max((window * pr * pr).sum() - mr * mr, 0.0)
                s2 = max((window * pd * pd).sum() - md * md, 0.0)
                s12 = (window * pr * pd).sum() - mr * md
                if s1 < eps:
                    g, sv, s1 = 0.0, s2, 0.0
                else:
                    g = s12 / (s1 + eps)
                    sv = s2 - g * s12
                if s2 < eps:
                    g, sv = 0.0, 0.0
                if g < 0:
                    g, sv = 0.0, s2
                sv = max(sv, eps)
                num += math.log10(1 + g * g * s1 / (sv + noise))
                den += math.log10(1 + s1 / noise)
    return num / den


def loop_psnr(fused, ir, vis):
    f, i, v = (x.astype(np.float64).ravel() for x in (fused, ir, vis))
    mse_i = sum((p - q) ** 2 for p, q in zip(f, i)) / len(f)
    mse_v = sum((p - q) ** 2 for p, q in zip(f, v)) / len(f)
    return 10 * math.log10(255**2 / ((mse_i + mse_v) / 2))


# ----------------------------------------------------------------------------------- input triples


def random_triple(shape, seed):
    """A random (ir, vis) pair and a plausible fused image (weighted mix plus noise), all uint8."""
    rng = np.random.default_rng(seed)
    ir = rng.integers(0, 256, shape).astype(np.uint8)
    vis = rng.integers(0, 256, shape).astype(np.uint8)
    mix = 0.6 * ir + 0.4 * vis + rng.normal(0, 8, shape)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8), ir, vis


def real_triple(shape, index, top, left):
    """A crop of a real TNO pair and its pixel average (uint8)."""
    ir, vis = read_pair("tno", index)
    h, w = shape
    ir = ir[top : top + h, left : left + w]
    vis = vis[top : top + h, left : left + w]
    assert ir.shape == vis.shape == shape, "crop outside the image"
    fused = np.rint((ir.astype(np.float64) + vis) / 2).astype(np.uint8)
    return fused, ir, vis


SMALL = (24, 31)


@pytest.fixture(params=["random", "tno"])
def small_triple(request):
    if request.param == "random":
        return random_triple(SMALL, seed=7)
    return real_triple(SMALL, index=4, top=180, left=200)


# ------------------------------------------------------------------------- hand-computable cases


def test_constant_image_has_no_information_or_contrast():
    flat = np.full((20, 30), 77, dtype=np.uint8)
    assert metrics.entropy(flat) == 0.0
    assert metrics.standard_deviation(flat) == 0.0
    assert metrics.spatial_frequency(flat) == 0.0
    assert metrics.average_gradient(flat) == 0.0


def test_two_level_half_half_image_has_one_bit():
    image = np.zeros((10, 16), dtype=np.uint8)
    image[:, 8:] = 200
    assert metrics.entropy(image) == pytest.approx(1.0, abs=1e-12)


def test_standard_deviation_of_small_array():
    # mean 3, squared deviations 9, 1, 1, 9 -> population variance 5
    assert metrics.standard_deviation([[0, 2], [4, 6]]) == pytest.approx(math.sqrt(5.0), rel=RTOL)


def test_stripes_and_checkerboard_gradients():
    stripes = np.tile(np.array([0, 10], dtype=np.uint8), (6, 4))  # columns alternate 0, 10
    assert metrics.spatial_frequency(stripes) == pytest.approx(10.0, rel=RTOL)  # sqrt(100 + 0)
    assert metrics.average_gradient(stripes) == pytest.approx(math.sqrt(50.0), rel=RTOL)
    checker = (np.indices((6, 8)).sum(axis=0) % 2 * 10).astype(np.uint8)
    assert metrics.spatial_frequency(checker) == pytest.approx(math.sqrt(200.0), rel=RTOL)
    # sqrt((100 + 100) / 2)
    assert metrics.average_gradient(checker) == pytest.approx(10.0, rel=RTOL)


def test_scd_of_sum_fusion_is_two():
    # F - V = I and F - I = V: both correlations are 1.
    _, ir, vis = random_triple((30, 40), seed=3)
    fused = ir.astype(np.float64) + vis
    assert metrics.scd(fused, ir, vis) == pytest.approx(2.0, rel=RTOL)


def test_scd_scores_a_constant_difference_zero():
    # F == I: F - I is constant, that term is 0 by convention, the other is corr(I - V, I).
    _, ir, vis = random_triple((30, 40), seed=4)
    ir_f = ir.astype(np.float64)
    expected = np.corrcoef(ir_f.ravel() - vis.ravel(), ir_f.ravel())[0, 1]
    assert metrics.scd(ir, ir, vis) == pytest.approx(expected, rel=1e-9)


def test_identical_images_score_perfectly(tno_pair):
    image = tno_pair[1][100:200, 150:300]
    assert metrics.ssim(image, image, image) == pytest.approx(1.0, rel=1e-12)
    assert metrics.psnr(image, image, image) == math.inf
    expected_mi = 2 * metrics.entropy(image)
    assert metrics.mutual_information(image, image, image) == pytest.approx(expected_mi, rel=1e-12)
    assert metrics.vif(image, image, image) == pytest.approx(2.0, rel=1e-9)


def test_psnr_of_known_offsets():
    _, ir, _ = random_triple((16, 20), seed=5)
    ir = ir.astype(np.float64)
    fused, vis = ir + 5, ir + 20  # MSE 25 and 225 -> mean 125
    assert metrics.psnr(fused, ir, vis) == pytest.approx(10 * math.log10(255**2 / 125), rel=RTOL)


def test_qabf_when_fused_is_ir_and_vis_is_black():
    # Every IR edge is copied exactly (G = 1, A = 1); a black image has no edges, even at the
    # zero-padded border, so Qabf is the per-pixel maximum
    # Tg / (1 + e^(kg/2)) * Ta / (1 + e^(ka/5)).
    _, ir, _ = random_triple((20, 25), seed=6)
    expected = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert metrics.qabf(ir, ir, np.zeros_like(ir)) == pytest.approx(expected, rel=RTOL)


def test_qabf_without_any_source_edge_is_undefined():
    black = np.zeros((12, 12), dtype=np.uint8)
    assert math.isnan(metrics.qabf(black + 50, black, black))


# ------------------------------------------------------------------------------------- invariances


def test_contrast_metrics_ignore_a_brightness_offset(tno_pair):
    ir = tno_pair[0][50:150, 60:200].astype(np.float64)
    shifted = ir + 40  # float: no clipping at 255
    for metric in (metrics.standard_deviation, metrics.spatial_frequency, metrics.average_gradient):
        assert metric(shifted) == pytest.approx(metric(ir), rel=RTOL)


def test_entropy_and_mi_ignore_a_relabelling_of_gray_levels(tno_pair):
    ir, vis = (x[100:180, 100:220] for x in tno_pair)
    relabel = np.random.default_rng(1).permutation(256).astype(np.uint8)
    assert metrics.entropy(relabel[vis]) == pytest.approx(metrics.entropy(vis), rel=1e-12)
    fused = np.rint((ir.astype(np.float64) + vis) / 2).astype(np.uint8)
    assert metrics.mutual_information(relabel[fused], ir, vis) == pytest.approx(
        metrics.mutual_information(fused, ir, vis), rel=1e-12
    )


def test_entropy_rounds_non_integer_levels():
    image = np.random.default_rng(2).integers(0, 255, (20, 20)).astype(np.float64)
    assert metrics.entropy(image + 0.3) == metrics.entropy(image)


@pytest.mark.parametrize("name", ["SCD", "VIF", "MI", "Qabf", "SSIM", "PSNR"])
def test_fusion_metrics_are_symmetric_in_the_sources(name):
    fused, ir, vis = real_triple((60, 80), index=2, top=120, left=200)
    metric = metrics.METRICS[name]
    assert metric(fused, vis, ir) == pytest.approx(metric(fused, ir, vis), rel=1e-12)


# -------------------------------------------------------------- agreement with the loop references


def test_single_image_metrics_match_loops(small_triple):
    fused = small_triple[0]
    assert metrics.entropy(fused) == pytest.approx(loop_entropy(fused), rel=RTOL)
    assert metrics.standard_deviation(fused) == pytest.approx(loop_std(fused), rel=RTOL)
    assert metrics.spatial_frequency(fused) == pytest.approx(loop_sf(fused), rel=RTOL)
    assert metrics.average_gradient(fused) == pytest.approx(loop_ag(fused), rel=RTOL)


def test_fusion_metrics_match_loops(small_triple):
    fused, ir, vis = small_triple
    assert metrics.scd(fused, ir, vis) == pytest.approx(loop_scd(fused, ir, vis), rel=RTOL)
    expected_mi = loop_mi(fused, ir, vis)
    assert metrics.mutual_information(fused, ir, vis) == pytest.approx(expected_mi, rel=RTOL)
    assert metrics.qabf(fused, ir, vis) == pytest.approx(loop_qabf(fused, ir, vis), rel=RTOL)
    assert metrics.psnr(fused, ir, vis) == pytest.approx(loop_psnr(fused, ir, vis), rel=RTOL)
    expected_ssim = 0.5 * (loop_ssim_index(fused, ir) + loop_ssim_index(fused, vis))
    assert metrics.ssim(fused, ir, vis) == pytest.approx(expected_ssim, rel=RTOL)


@pytest.mark.parametrize("source", ["random", "tno"])
def test_vif_matches_loop_reference(source):
    shape = (48, 56)
    if source == "random":
        fused, ir, vis = random_triple(shape, seed=11)
    else:
        fused, ir, vis = real_triple(shape, index=4, top=200, left=200)
    expected = loop_vifp(ir, fused) + loop_vifp(vis, fused)
    assert metrics.vif(fused, ir, vis) == pytest.approx(expected, rel=1e-8)


# --------------------------------------------------------------------------------- API and failures


def test_evaluate_returns_every_metric_in_order():
    fused, ir, vis = real_triple((64, 72), index=7, top=100, left=100)
    scores = metrics.evaluate(fused, ir, vis)
    assert list(scores) == list(metrics.METRICS)
    for name, metric in metrics.METRICS.items():
        assert scores[name] == metric(fused, ir, vis)


def test_bad_inputs_raise_streamfuse_errors():
    fused, ir, vis = random_triple((50, 50), seed=0)
    with pytest.raises(StreamFuseError, match="2-D"):
        metrics.entropy(np.zeros((4, 4, 3)))
    with pytest.raises(StreamFuseError, match="differ in shape"):
        metrics.evaluate(fused, ir, vis[:, :40])
    with pytest.raises(StreamFuseError, match="41x41"):
        metrics.vif(fused[:40], ir[:40], vis[:40])
