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


def _onto_parameters(jacobian: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(8, N) derivatives by the homography terms -> (P, N) by the model's parameters, i.e.
    ``basis.T @ jacobian``, exactly: every basis column is +-1 times one or two terms, so the
    homography's and the affine model's are the leading rows themselves (no copy)."""
    parameters = basis.shape[1]
    if np.array_equal(basis, np.eye(8)[:, :parameters]):
        return jacobian[:parameters]
    descent = np.zeros((parameters, jacobian.shape[1]))
    for parameter, column in enumerate(basis.T):
        for term in np.flatnonzero(column):
            if column[term] > 0:
                descent[parameter] += jacobian[term]
            else:
                descent[parameter] -= jacobian[term]
    return descent


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
    # Only the sampled grid is resampled: grid cell (i, j) is template pixel
    # (first + step j, first + step i), so the warp of the grid is warp @ grid_to_template.
    step = 1 if max_samples is None else max(1, int(np.sqrt(height * width / max_samples)))
    first = step // 2
    grid = (slice(first, None, step), slice(first, None, step))
    grid_height, grid_width = template[grid].shape[:2]
    grid_size = (grid_width, grid_height)
    grid_to_template = np.array([[step, 0, first], [0, step, first], [0, 0, 1.0]])
    grid_usable = np.ones((grid_height, grid_width), bool) if template_mask is None else \
        np.asarray(template_mask)[grid] > 0
    # Channel-major (C, grid pixels) planes: the per-pixel arithmetic below runs along long
    # rows, which NumPy does several times faster than along a trailing axis of C.
    grid_template = np.ascontiguousarray(np.moveaxis(template[grid], 2, 0),
                                         dtype=np.float64).reshape(channels, -1)
    grid_ys, grid_xs = np.mgrid[0:grid_height, 0:grid_width].astype(np.float64)
    grid_xs = (grid_xs * step + first).ravel()
    grid_ys = (grid_ys * step + first).ravel()
    corners = image_corners((width, height))
    warp = normalised(np.asarray(warp, np.float64))
    flags = interpolation | cv2.WARP_INVERSE_MAP
    correlation = 0.0
    for _ in range(iterations):
        grid_warp = warp if step == 1 else warp @ grid_to_template
        warped_mask = cv2.warpPerspective(moving_mask, grid_warp, grid_size,
                                          flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        used = np.flatnonzero((warped_mask > 0) & grid_usable)
        if len(used) < 16 * basis.shape[1]:
            raise cv2.error("ecc_multichannel: too little overlap")
        # np.take of flat indices gathers several times faster than a boolean mask.
        resampled = cv2.warpPerspective(moving_and_gradients, grid_warp, grid_size, flags=flags)
        resampled = np.take(resampled.reshape(-1, 3 * channels), used, axis=0)
        resampled = np.ascontiguousarray(resampled.T, dtype=np.float64)  # (3 C, N)
        image = resampled[:channels]  # (C, N)
        wx, wy = resampled[channels:2 * channels], resampled[2 * channels:]
        x, y = np.take(grid_xs, used), np.take(grid_ys, used)
        target = np.take(grid_template, used, axis=1)
        image = image - image.mean()
        target -= target.mean()
        image_norm = np.sqrt(np.einsum("cn,cn->", image, image))
        target_norm = np.sqrt(np.einsum("cn,cn->", target, target))
        if image_norm == 0 or target_norm == 0:
            raise cv2.error("ecc_multichannel: a flat image")
        image_dot_target = np.einsum("cn,cn->", image, target)
        correlation = float(image_dot_target / (image_norm * target_norm))
        # Steepest-descent images (8, C, N): the moving gradient of each channel through the
        # homography's Jacobian at each template pixel (d(u, v) / d(h00 .. h21)), written into
        # one preallocated array; every channel's pixels are columns of one (8, C N) matrix
        # for BLAS.
        denominator = warp[2, 0] * x + warp[2, 1] * y + 1.0
        u = (warp[0, 0] * x + warp[0, 1] * y + warp[0, 2]) / denominator
        v = (warp[1, 0] * x + warp[1, 1] * y + warp[1, 2]) / denominator
        jacobian = np.empty((8, channels, len(used)))
        along_u, along_v = jacobian[2], jacobian[5]
        np.divide(wx, denominator, out=along_u)
        np.divide(wy, denominator, out=along_v)
        np.multiply(along_u, u, out=jacobian[6])
        np.multiply(along_v, v, out=jacobian[7])
        along_w = np.add(jacobian[6], jacobian[7], out=jacobian[1])
        np.negative(along_w, out=along_w)
        np.multiply(along_w, x, out=jacobian[6])
        np.multiply(along_w, y, out=jacobian[7])
        np.multiply(along_u, x, out=jacobian[0])
        np.multiply(along_u, y, out=jacobian[1])  # along_w is used up
        np.multiply(along_v, x, out=jacobian[3])
        np.multiply(along_v, y, out=jacobian[4])
        jacobian = jacobian.reshape(8, -1)
        descent = _onto_parameters(jacobian, basis)  # (P, C N)
        hessian_inverse = np.linalg.inv(descent @ descent.T)
        image_projection = descent @ image.reshape(-1)
        template_projection = descent @ target.reshape(-1)
        numerator = image_norm ** 2 - image_projection @ hessian_inverse @ image_projection
        denominator_scale = image_dot_target - \
            template_projection @ hessian_inverse @ image_projection
        if denominator_scale <= 0:
            raise cv2.error("ecc_multichannel: the correlation is not positive")
        error = numerator / denominator_scale * target - image
        update = basis @ (hessian_inverse @ (descent @ error.reshape(-1)))
        previous = transform_points(warp, corners)
        warp = warp + np.append(update, 0.0).reshape(3, 3)
        moved = np.abs(transform_points(warp, corners) - previous).max()
        if moved < epsilon:
            break
    return correlation, warp
