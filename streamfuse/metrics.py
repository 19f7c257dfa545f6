"""Image fusion quality metrics (EN, SD, SF, AG, SCD, VIF, MI, Qabf, SSIM, PSNR) on gray images.

Every metric takes (H, W) images, normally uint8 (0..255); any real array is accepted and
computed on in float64. The six metrics of DIDFuse (Section IV-A-2, eq. 18-25) follow the paper
and the public Python evaluator of the same authors (``utils/Evaluator.py`` in
github.com/Zhaozixiang1228/MMIF-CDDFuse, "the reference evaluator" below); each docstring says
where we depart from it and why. A plain pixel average of the 40 TNO pairs scores EN 6.16,
SD 24.80, SF 6.42, VIF 0.570, AG 3.32, SCD 1.61 with these functions (method-notes.md: 6.2, 24.8,
6.4, 0.57, 3.3, 1.61); ``bench/metrics_tno_baselines.py`` recomputes this.

``METRICS`` maps a metric name to a function of ``(fused, ir, vis)``; ``evaluate`` runs them all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import ArrayLike

from streamfuse.errors import StreamFuseError

GRAY_LEVELS = 256
PEAK = 255.0

# Pixel-domain multi-scale VIF (Sheikh & Bovik, vifp_mscale).
VIF_SCALES = 4
VIF_NOISE_VAR = 2.0
_VIF_EPS = 1e-10
# Each scale filters with a 'valid' Gaussian window and halves the size: the smallest side that
# still leaves at least one window position at scale 4 (17 -> 9 -> 5 -> 3 sized windows).
VIF_MIN_SIDE = 41

# Xydeas & Petrovic edge-preservation constants (sigmoid gain, slope, midpoint) and weight exponent.
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0

# SSIM of Wang et al. (2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_image(image: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise StreamFuseError(
            f"metric input '{name}' has shape {array.shape}: pass a non-empty 2-D (H, W) "
            "gray image (convert colour with cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))"
        )
    return array


def _as_images(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> tuple[np.ndarray, ...]:
    images = _as_image(fused, "fused"), _as_image(ir, "ir"), _as_image(vis, "vis")
    if not images[0].shape == images[1].shape == images[2].shape:
        raise StreamFuseError(
            f"metric inputs differ in shape (fused {images[0].shape}, ir {images[1].shape}, "
            f"vis {images[2].shape}): register and crop the pair to one size first"
        )
    return images


def _gray_levels(image: np.ndarray) -> np.ndarray:
    """(H, W) float -> (H, W) integer gray levels 0..255 (rounded, clipped)."""
    return np.clip(np.rint(image), 0, GRAY_LEVELS - 1).astype(np.intp)


def _entropy_bits(counts: np.ndarray) -> float:
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def _filter_valid(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """(H, W) -> (H - k + 1, W - k + 1): separable correlation, 'valid' part only.

    Only positions where the whole window lies inside the image are kept (MATLAB
    ``filter2(w, x, 'valid')``), so OpenCV's border mode never reaches the result.
    """
    radius = len(kernel_1d) // 2
    filtered = cv2.sepFilter2D(
        np.ascontiguousarray(image), cv2.CV_64F, kernel_1d, kernel_1d,
        borderType=cv2.BORDER_REFLECT_101,
    )
    return filtered[radius : image.shape[0] - radius, radius : image.shape[1] - radius]


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    # exp(-x^2 / 2 sigma^2), normalised; its outer product is MATLAB's fspecial('gaussian').
    return cv2.getGaussianKernel(size, sigma, cv2.CV_64F).ravel()


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (H, W) arrays (eq. 25); 0 when either one is constant."""
    a_centred = a - a.mean()
    b_centred = b - b.mean()
    denominator = math.sqrt(float((a_centred**2).sum()) * float((b_centred**2).sum()))
    if denominator == 0.0:
        return 0.0
    return float((a_centred * b_centred).sum()) / denominator


# --------------------------------------------------------------------------- no-reference metrics


def entropy(image: ArrayLike) -> float:
    """EN, eq. 18: ``-sum_l p_l log2 p_l`` over a 256-bin gray-level histogram, in bits.

    Args:
        image: (H, W) gray image; non-integer values are rounded to the nearest level and clipped
            to 0..255 (the reference evaluator rounds the same way, ``np.uint8(np.round(x))``).

    Returns:
        0 for a constant image, at most 8.
    """
    levels = _gray_levels(_as_image(image, "image"))
    return _entropy_bits(np.bincount(levels.ravel(), minlength=GRAY_LEVELS))


def standard_deviation(image: ArrayLike) -> float:
    """SD, eq. 19: population standard deviation ``sqrt(mean((I - mean(I))^2))`` (divisor H*W)."""
    return float(np.std(_as_image(image, "image")))


def spatial_frequency(image: ArrayLike) -> float:
    """SF, eq. 20-21 as Python evaluators compute it: ``sqrt(mean(dx^2) + mean(dy^2))``.

    ``dx = I[:, 1:] - I[:, :-1]`` (H x (W-1) horizontal differences) and ``dy = I[1:, :] -
    I[:-1, :]`` ((H-1) x W vertical differences), each squared and averaged over its own count
    (the reference evaluator's ``SF``). Eq. 21 writes plain sums; the means make SF independent of
    image size. No border padding.
    """
    array = _as_image(image, "image")
    horizontal = np.diff(array, axis=1)
    vertical = np.diff(array, axis=0)
    horizontal_term = float(np.mean(horizontal**2)) if horizontal.size else 0.0
    vertical_term = float(np.mean(vertical**2)) if vertical.size else 0.0
    return math.sqrt(horizontal_term + vertical_term)


def average_gradient(image: ArrayLike) -> float:
    """AG, eq. 22-23: mean of ``sqrt((grad_h^2 + grad_v^2) / 2)`` with one-sided differences.

    ``grad_h(i, j) = I(i, j) - I(i, j-1)`` and ``grad_v(i, j) = I(i, j) - I(i-1, j)`` exactly as
    eq. 23, evaluated at the (H-1) x (W-1) pixels that have both a left and an upper neighbour
    (i, j >= 1), and averaged over those (the classic MATLAB ``avg_gradient`` region; no padding).
    The reference evaluator uses central differences (``np.gradient``) over all H x W pixels
    instead, which scores about 25% lower (2.5 instead of 3.3 for a pixel average of the TNO
    pairs); the values quoted in method-notes.md match these one-sided differences.
    Images with a side of 1 pixel have no such region and score 0.
    """
    array = _as_image(image, "image")
    if min(array.shape) < 2:
        return 0.0
    horizontal = array[1:, 1:] - array[1:, :-1]
    vertical = array[1:, 1:] - array[:-1, 1:]
    return float(np.mean(np.sqrt((horizontal**2 + vertical**2) / 2.0)))


# ------------------------------------------------------------------------- fusion metrics (F, I, V)


def scd(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """SCD, eq. 24-25: ``corr(F - V, I) + corr(F - I, V)`` (Aslantas & Bendes), in [-2, 2].

    ``corr`` is the Pearson correlation over all pixels (eq. 25), as the reference evaluator.
    Convention for a degenerate term: when a difference image or a source is constant (e.g. a
    "fusion" that returns the IR image exactly, so F - I = 0) its correlation is undefined (0/0);
    we score that term 0 (no information from that source), where the reference gives NaN.
    Symmetric in the two sources.
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    return _correlation(fused_f - vis_f, ir_f) + _correlation(fused_f - ir_f, vis_f)


def vifp(reference: ArrayLike, distorted: ArrayLike) -> float:
    """Pixel-domain multi-scale VIF of Sheikh & Bovik (2006), one reference against one image.

    As the classic ``vifp_mscale`` code (and the reference evaluator's ``compare_viff``): for
    scales s = 1..4 a Gaussian window of size ``N = 2^(4 - s + 1) + 1`` (17, 9, 5, 3) and
    sigma ``N / 5``; for s > 1 both images are first filtered with that window ('valid') and
    subsampled by 2 (every other row and column, starting at the first). At each scale, over
    the 'valid' window positions, local means, variances and covariance give the gain
    ``g = s_rd / s_r^2`` and residual ``s_v^2 = s_d^2 - g s_rd``, then

        VIF = sum_s sum log10(1 + g^2 s_r^2 / (s_v^2 + sigma_n^2))
              / sum_s sum log10(1 + s_r^2 / sigma_n^2)

    with ``sigma_n^2 = 2``. The special cases of that code are kept: negative variances -> 0;
    where ``s_r^2 < 1e-10``: g = 0, s_v^2 = s_d^2; where ``s_d^2 < 1e-10``: g = 0, s_v^2 = 0;
    where g < 0: s_v^2 = s_d^2, g = 0; then s_v^2 floored at 1e-10. A reference with no local
    variance at any scale (0/0) scores 1.0, as in that code. Window values equal the code's
    (its ``h < eps * max(h)`` cut never triggers for these sizes).

    Args:
        reference: (H, W) source image, H and W >= 41 (so every scale has a window position).
        distorted: (H, W) image judged against it (the fused image in fusion use).
    """
    ref = _as_image(reference, "reference")
    dist = _as_image(distorted, "distorted")
    if ref.shape != dist.shape:
        raise StreamFuseError(
            f"VIF reference {ref.shape} and distorted {dist.shape} differ in shape: use one size"
        )
    if min(ref.shape) < VIF_MIN_SIDE:
        raise StreamFuseError(
            f"VIF needs images of at least {VIF_MIN_SIDE}x{VIF_MIN_SIDE} pixels for its 4 scales, "
            f"got {ref.shape}: evaluate on larger images or crops"
        )
    numerator = 0.0
    denominator = 0.0
    for scale in range(1, VIF_SCALES + 1):
        size = 2 ** (VIF_SCALES - scale + 1) + 1
        window = _gaussian_1d(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, window)[::2, ::2]
            dist = _filter_valid(dist, window)[::2, ::2]
        mu_ref = _filter_valid(ref, window)
        mu_dist = _filter_valid(dist, window)
        var_ref = np.maximum(_filter_valid(ref * ref, window) - mu_ref * mu_ref, 0.0)
        var_dist = np.maximum(_filter_valid(dist * dist, window) - mu_dist * mu_dist, 0.0)
        cov = _filter_valid(ref * dist, window) - mu_ref * mu_dist

        gain = cov / (var_ref + _VIF_EPS)
        var_noise = var_dist - gain * cov
        flat_ref = var_ref < _VIF_EPS
        gain = np.where(flat_ref, 0.0, gain)
        var_noise = np.where(flat_ref, var_dist, var_noise)
        var_ref = np.where(flat_ref, 0.0, var_ref)
        flat_dist = var_dist < _VIF_EPS
        gain = np.where(flat_dist, 0.0, gain)
        var_noise = np.where(flat_dist, 0.0, var_noise)
        negative = gain < 0
        var_noise = np.where(negative, var_dist, var_noise)
        gain = np.where(negative, 0.0, gain)
        var_noise = np.maximum(var_noise, _VIF_EPS)

        numerator += float(np.log10(1.0 + gain**2 * var_ref / (var_noise + VIF_NOISE_VAR)).sum())
        denominator += float(np.log10(1.0 + var_ref / VIF_NOISE_VAR).sum())
    if denominator == 0.0:
        return 1.0
    return numerator / denominator


def vif(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """VIF in fusion form: ``vifp(ir, fused) + vifp(vis, fused)`` (each source as reference).

    Summed over the two sources as the reference evaluator's ``VIFF`` (so a perfect score is 2,
    not 1). Images must be at least 41x41; see :func:`vifp` for the per-pair definition.
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    return vifp(ir_f, fused_f) + vifp(vis_f, fused_f)


def _mutual_information_bits(a: np.ndarray, b: np.ndarray) -> float:
    """MI of two (H, W) images from their 256 x 256-bin joint histogram: H(a) + H(b) - H(a, b)."""
    levels_a = _gray_levels(a).ravel()
    levels_b = _gray_levels(b).ravel()
    joint = np.bincount(levels_a * GRAY_LEVELS + levels_b, minlength=GRAY_LEVELS**2)
    joint = joint.reshape(GRAY_LEVELS, GRAY_LEVELS)
    marginal_a, marginal_b = joint.sum(axis=1), joint.sum(axis=0)
    return _entropy_bits(marginal_a) + _entropy_bits(marginal_b) - _entropy_bits(joint)


def mutual_information(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """MI: ``MI(F, I) + MI(F, V)`` in bits, from 256 x 256-bin joint gray-level histograms.

    ``MI(F, S) = sum p(f, s) log2(p(f, s) / (p(f) p(s)))``, gray levels rounded and clipped to
    0..255 as in :func:`entropy`, so ``MI(X, X) = EN(X)``. Log base 2 as the MATLAB fusion
    metrics (VIFB); the reference evaluator calls ``sklearn.metrics.mutual_info_score``, which
    reports nats (its values are ln 2 = 0.693 times ours).
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    return _mutual_information_bits(fused_f, ir_f) + _mutual_information_bits(fused_f, vis_f)


def _sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) -> edge strength sqrt(sx^2 + sy^2) and orientation atan(sy / sx), both (H, W).

    3x3 Sobel with zero padding (cv2.BORDER_CONSTANT), the ``conv2(..., 'same')`` border of
    the MATLAB and Python Qabf code. Signs as that code's convolutions: ``sx`` is OpenCV's x
    Sobel negated (left minus right), ``sy`` OpenCV's y Sobel (lower minus upper). Orientation is
    ``atan(sy / sx)`` in (-pi/2, pi/2), and pi/2 where sx = 0, as that code; the signs matter
    only there (a pi/2 against a nearly vertical neighbour orientation).
    """
    # Negated so that sx == 0 -> pi/2 lines up with the same pixels' orientations as the
    # reference code (conv2 flips the kernel; OpenCV correlates).
    sobel_x = -cv2.Sobel(image, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_CONSTANT)
    sobel_y = cv2.Sobel(image, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sobel_x**2 + sobel_y**2)
    vertical_edge = sobel_x == 0
    ratio = sobel_y / np.where(vertical_edge, 1.0, sobel_x)
    orientation = np.where(vertical_edge, math.pi / 2, np.arctan(ratio))
    return strength, orientation


def _edge_preservation(
    strength_src: np.ndarray, orientation_src: np.ndarray,
    strength_fused: np.ndarray, orientation_fused: np.ndarray,
) -> np.ndarray:
    """Per-pixel Q^{SF} = Q_g * Q_a of Xydeas & Petrovic, (H, W) in [0, Tg * Ta]."""
    larger = np.maximum(strength_src, strength_fused)
    smaller = np.minimum(strength_src, strength_fused)
    strength_ratio = np.divide(smaller, larger, out=np.zeros_like(larger), where=larger > 0)
    orientation_match = 1.0 - np.abs(orientation_src - orientation_fused) / (math.pi / 2)
    q_strength = QABF_TG / (1.0 + np.exp(QABF_KG * (strength_ratio - QABF_DG)))
    q_orientation = QABF_TA / (1.0 + np.exp(QABF_KA * (orientation_match - QABF_DA)))
    return q_strength * q_orientation


def qabf(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """Qabf (Q^{AB/F}, Xydeas & Petrovic 2000): share of source edge information kept in F.

    Sobel strength g and orientation a per pixel (see ``_sobel_strength_orientation``: zero
    padding, ``atan(sy / sx)``), then for source S:
    ``G = min(g_S, g_F) / max(g_S, g_F)`` (0 where both are 0), ``A = 1 - |a_S - a_F| / (pi/2)``,
    ``Q^{SF} = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))`` with Tg = 0.9994,
    kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8, and

        Qabf = sum(Q^{IF} g_I^L + Q^{VF} g_V^L) / sum(g_I^L + g_V^L),  L = 1.

    Same constants and borders as the reference evaluator, with one fix: where g_S == g_F > 0 it
    sets G = g_F instead of 1 (a ratio above 1), which raises Q_g there by at most 0.06%.
    Sources without any edge (both all zero) leave Qabf undefined: NaN.
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    strength_f, orientation_f = _sobel_strength_orientation(fused_f)
    numerator = 0.0
    denominator = 0.0
    for source in (ir_f, vis_f):
        strength_s, orientation_s = _sobel_strength_orientation(source)
        weight = strength_s**QABF_L
        preserved = _edge_preservation(strength_s, orientation_s, strength_f, orientation_f)
        numerator += float((preserved * weight).sum())
        denominator += float(weight.sum())
    if denominator == 0.0:
        return math.nan
    return numerator / denominator


def ssim_index(a: ArrayLike, b: ArrayLike) -> float:
    """SSIM of Wang et al. (2004) between two (H, W) images (H, W >= 11), mean of the SSIM map.

    As their ``ssim_index.m``: 11x11 Gaussian window, sigma 1.5 (normalised), local statistics
    weighted by it (no Bessel correction), C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 255, map over
    the 'valid' (H-10) x (W-10) window positions (no padding, no automatic downsampling)::

        SSIM = ((2 mu_a mu_b + C1)(2 s_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))
    """
    first = _as_image(a, "a")
    second = _as_image(b, "b")
    if first.shape != second.shape:
        raise StreamFuseError(f"SSIM inputs {first.shape} and {second.shape} differ in shape")
    if min(first.shape) < SSIM_WINDOW:
        raise StreamFuseError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {first.shape}"
        )
    window = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    mu_a = _filter_valid(first, window)
    mu_b = _filter_valid(second, window)
    var_a = _filter_valid(first * first, window) - mu_a * mu_a
    var_b = _filter_valid(second * second, window) - mu_b * mu_b
    cov = _filter_valid(first * second, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return float(ssim_map.mean())


def ssim(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """SSIM in fusion form: ``(SSIM(F, I) + SSIM(F, V)) / 2`` (mean, so 1 is perfect).

    The reference evaluator sums the two instead (and uses scikit-image's 7x7 uniform window);
    see :func:`ssim_index` for the window and constants used here.
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    return 0.5 * (ssim_index(fused_f, ir_f) + ssim_index(fused_f, vis_f))


def psnr(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> float:
    """PSNR in fusion form: ``10 log10(255^2 / ((MSE(F, I) + MSE(F, V)) / 2))``, in dB.

    Peak fixed at 255 (8-bit); the reference evaluator uses max(F)^2 instead. Returns ``inf``
    when F equals both sources (zero error), no cap.
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    mse = 0.5 * (float(np.mean((fused_f - ir_f) ** 2)) + float(np.mean((fused_f - vis_f) ** 2)))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK**2 / mse)


MetricFn = Callable[[ArrayLike, ArrayLike, ArrayLike], float]

# Paper order first (Table III: EN, SD, SF, VIF, AG, SCD), then the other common ones.
METRICS: dict[str, MetricFn] = {
    "EN": lambda fused, ir, vis: entropy(fused),
    "SD": lambda fused, ir, vis: standard_deviation(fused),
    "SF": lambda fused, ir, vis: spatial_frequency(fused),
    "VIF": vif,
    "AG": lambda fused, ir, vis: average_gradient(fused),
    "SCD": scd,
    "MI": mutual_information,
    "Qabf": qabf,
    "SSIM": ssim,
    "PSNR": psnr,
}


def evaluate(fused: ArrayLike, ir: ArrayLike, vis: ArrayLike) -> dict[str, float]:
    """Every metric of ``METRICS`` for one fused image and its (ir, vis) sources, all (H, W).

    Returns:
        ``{name: value}`` in ``METRICS`` order. Images must be at least 41x41 (VIF's 4 scales).
    """
    fused_f, ir_f, vis_f = _as_images(fused, ir, vis)
    return {name: float(metric(fused_f, ir_f, vis_f)) for name, metric in METRICS.items()}
