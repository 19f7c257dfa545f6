"""Image features and the ECC optimiser that ``--auto`` aligns them with.

Two frames of different modalities are compared through normalised gradient fields
(``orientation_features``, double-angle form: edge polarity and strength drop out); a warp
between them is found by ``ecc_multichannel``, the enhanced correlation coefficient maximisation
of Evangelidis & Psarakis (2008), as ``cv2.findTransformECC`` runs it, extended to several
channels at once. ``gradient_magnitude`` is the simpler feature ``--check`` scores with.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamfuse.calibration import image_corners
from streamfuse.registration.geometry import normalised, transform_points


def content_mask(shape: tuple[int, int], valid: np.ndarray | None, margin: int) -> np.ndarray:
    """(H, W) uint8 mask (255 = usable) of ``valid`` eroded by ``margin`` pixels; outside the
    frame counts as valid, so the frame's own border is not a warp border."""
    if valid is None:
        return np.full(shape, 255, np.uint8)
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.erode((np.asarray(valid) > 0).astype(np.uint8) * 255, kernel,
                     borderType=cv2.BORDER_CONSTANT, borderValue=255)


def _gradients(gray: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    image = gray.astype(np.float32)
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return (cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=0.125),
            cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=0.125))


def gradient_magnitude(gray: np.ndarray, sigma: float, valid: np.ndarray | None = None,
                       post_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image -> ((H, W) float32 gradient magnitude, (H, W) uint8 valid mask).

    Pixels near the edge of ``valid`` (a (H, W) mask of real image content, nonzero = valid) are
    dropped from the mask and zeroed, so the border of a warped image is not taken for an edge.
    """
    gx, gy = _gradients(gray, sigma)
    magnitude = cv2.magnitude(gx, gy)
    if post_sigma > 0:
        magnitude = cv2.GaussianBlur(magnitude, (0, 0), post_sigma)
    inner = content_mask(gray.shape[:2], valid, int(np.ceil(3 * (sigma + post_sigma))) + 2)
    magnitude[inner == 0] = 0
    return magnitude, inner


def orientation_features(gray: np.ndarray, sigma: float, valid: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image -> ((H, W, 2) float32 normalised gradient field in double-angle form,
    (H, W) uint8 valid mask).

    Channels: ((gx^2 - gy^2), 2 gx gy) / (e + e_noise), e = gx^2 + gy^2 the gradient energy
    after a Gaussian blur of ``sigma`` and e_noise its median over the valid pixels. That is
    (cos 2a, sin 2a) of the gradient angle a weighted by e / (e + e_noise): the same for a
    dark-to-bright and a bright-to-dark edge, about 1 for any edge clearly above the median, about 0
    in flat or noisy areas. The product of two such fields is w1 w2 cos(2 (a1 - a2)). Pixels
    near the edge of ``valid`` are zeroed and masked as in ``gradient_magnitude``.
    """
    gx, gy = _gradients(gray, sigma)
    energy = gx * gx + gy * gy
    inner = content_mask(gray.shape[:2], valid, int(np.ceil(3 * sigma)) + 2)
    usable = energy[inner > 0]
    noise = float(np.median(usable)) if usable.size else 0.0
    denominator = energy + max(noise, 1e-6)
    features = np.dstack([(gx * gx - gy * gy) / denominator, 2 * gx * gy / denominator])
    features[inner == 0] = 0
    return features, inner


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (width, height), area-averaged (unchanged when it is that size)."""
    if image.shape[1::-1] == tuple(size):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# Parameter subspaces of the additive homography update (rows: h00 h01 h02 h10 h11 h12 h20 h21).
_SIMILARITY_BASIS = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0],
                              [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1],
                              [0, 0, 0, 0], [0, 0, 0, 0]], np.float64)
_AFFINE_BASIS = np.eye(8)[:, :6]
_HOMOGRAPHY_BASIS = np.eye(8)
_BASES = {"similarity": _SIMILARITY_BASIS, "affine": _AFFINE_BASIS,
          "homography": _HOMOGRAPHY_BASIS}


def ecc_multichannel(template: np.ndarray, moving: np.ndarray, warp: np.ndarray,
                     template_mask: np.ndarray | None = None,
                     moving_mask: np.ndarray | None = None, model: str = "homography",
                     iterations: int = 60, epsilon: float = 1e-5, max_samples: int | None = None,
                     interpolation: int = cv2.INTER_LINEAR) -> tuple[float, np.ndarray]:
    """Maximise the correlation coefficient of two multi-channel images over a warp (ECC).

    ``template``: (H_t, W_t, C) float32, ``moving``: (H_m, W_m, C) float32, ``warp``: (3, 3)
    map from template pixels to moving pixels (as in ``cv2.findTransformECC``); masks (H, W)
    uint8, nonzero = use. ``model``: "similarity" (scale, rotation, shift added to the warp's
    affine part), "affine" (its six affine terms) or "homography". Forward-additive
    Gauss-Newton with ECC's closed-form scaling of the template (Evangelidis & Psarakis 2008);
    the correlation is taken over all channels together. Stops after ``iterations`` or when no
    corner of the template moves more than ``epsilon`` pixels. ``max_samples``: use the
    template pixels of a regular grid of about this many (every k-th row and column), which
    costs little precision on smooth maps and saves time at full resolution.
    ``interpolation``: how ``moving`` and its gradients are resampled (``cv2.INTER_LINEAR`` or
    ``cv2.INTER_CUBIC``, which is less biased at sub-pixel precision).
    Returns (final correlation, (3, 3) float64 warp). Raises cv2.error when the images do not
    overlap enough or the problem is degenerate.
    """
    basis = _BASES[model]
    height, width = template.shape[:2]
    channels = template.shape[2]
    template = template.reshape(height, width, channels)
    moving = moving.reshape(moving.shape[0], moving.shape[1], channels)
    if template_mask is None:
        template_mask = np.full((height, width), 255, np.uint8)
    if moving_mask is None:
        moving_mask = np.full(moving.shape[:2], 255, np.uint8)
    # Central differences, in moving pixels.
    kernel = np.array([[-0.5, 0, 0.5]], np.float32)
    grad_x = cv2.filter2D(moving, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    grad_y = cv2.filter2D(moving, cv2.CV_32F, kernel.T, borderType=cv2.BORDER_REPLICATE)
    # The image and its gradients are resampled together: one warp and one gather per
    # iteration (twice as fast as three).
    moving_and_gradients = np.concatenate(
        [moving, grad_x.reshape(moving.shape), grad_y.reshape(moving.shape)], axis=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sampled = np.zeros((height, width), bool)
    step = 1 if max_samples is None else max(1, int(np.sqrt(height * width / max_samples)))
    sampled[step // 2::step, step // 2::step] = True
    template_mask = (template_mask > 0) & sampled
    corners = image_corners((width, height))
    warp = normalised(np.asarray(warp, np.float64))
    flags = interpolation | cv2.WARP_INVERSE_MAP
    correlation = 0.0
    for _ in range(iterations):
        size = (width, height)
        warped_mask = cv2.warpPerspective(moving_mask, warp, size,
                                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        use = (warped_mask > 0) & template_mask
        if use.sum() < 16 * basis.shape[1]:
            raise cv2.error("ecc_multichannel: too little overlap")
        resampled = cv2.warpPerspective(moving_and_gradients, warp, size, flags=flags).reshape(
            height, width, 3 * channels)[use].astype(np.float64)
        image = resampled[:, :channels]  # (N, C)
        wx, wy = resampled[:, channels:2 * channels], resampled[:, 2 * channels:]
        x, y = xs[use], ys[use]
        target = template[use].astype(np.float64)
        image = image - image.mean()
        target -= target.mean()
        image_norm = np.sqrt(np.einsum("nc,nc->", image, image))
        target_norm = np.sqrt(np.einsum("nc,nc->", target, target))
        if image_norm == 0 or target_norm == 0:
            raise cv2.error("ecc_multichannel: a flat image")
        image_dot_target = np.einsum("nc,nc->", image, target)
        correlation = float(image_dot_target / (image_norm * target_norm))
        # Steepest-descent images (8, N, C): the moving gradient of each channel through the
        # homography's Jacobian at each template pixel, then onto the model's P parameters;
        # every channel's pixels are columns of one (P, N C) matrix for BLAS.
        denominator = warp[2, 0] * x + warp[2, 1] * y + 1.0
        u = (warp[0, 0] * x + warp[0, 1] * y + warp[0, 2]) / denominator
        v = (warp[1, 0] * x + warp[1, 1] * y + warp[1, 2]) / denominator
        along_u = wx / denominator[:, None]  # (N, C)
        along_v = wy / denominator[:, None]
        along_w = -(along_u * u[:, None] + along_v * v[:, None])
        x, y = x[:, None], y[:, None]
        descent = np.stack([along_u * x, along_u * y, along_u, along_v * x, along_v * y,
                            along_v, along_w * x, along_w * y])
        descent = basis.T @ descent.reshape(8, -1)  # (P, N C)
        hessian_inverse = np.linalg.inv(descent @ descent.T)
        image_projection = descent @ image.reshape(-1)
        template_projection = descent @ target.reshape(-1)
        numerator = image_norm ** 2 - image_projection @ hessian_inverse @ image_projection
        denominator_scale = image_dot_target - \
            template_projection @ hessian_inverse @ image_projection
        if denominator_scale <= 0:
            raise cv2.error("ecc_multichannel: the correlation is not positive")
        error = numerator / denominator_scale * target - image
        step = basis @ (hessian_inverse @ (descent @ error.reshape(-1)))
        previous = transform_points(warp, corners)
        warp = warp + np.append(step, 0.0).reshape(3, 3)
        moved = np.abs(transform_points(warp, corners) - previous).max()
        if moved < epsilon:
            break
    return correlation, warp
