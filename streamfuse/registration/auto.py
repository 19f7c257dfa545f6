"""Target-free IR->visible registration: multi-scale ECC on gradient-magnitude maps.

Thermal and visible intensities are unrelated, but both cameras see the same object outlines, so
their gradient-magnitude maps correlate. Coarse to fine, all with ``cv2.findTransformECC``:

1. Coarse: an exhaustive scale/rotation/shift search at a small pyramid level, then rigid ECC
   (translation, Euclidean) up to a medium level: a start within a few pixels.
2. Fine: homography ECC at medium and full resolution.

Same-modality pairs (intensities correlate) get a last full-resolution ECC on the intensities.
Each candidate (the given start, the coarse one, the fine one) is scored by the gradient
correlation at full resolution, overall and in 3 x 3 tiles; the best one wins if it beats the
start significantly (by ``keep_margin`` and ``min_gain_t`` standard errors of the per-tile
gains), else the start is kept: an already-aligned pair keeps its homography, parallax or noise
is not fitted as a correction. Several frame pairs are combined by the median position of the
IR image corners; their spread is the residual. ``check_reliable`` refuses weak or inconsistent results.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamfuse.calibration import image_corners
from streamfuse.errors import StreamFuseError
from streamfuse.registration.geometry import normalised, pixel_scaling, transform_points


@dataclass
class AutoSettings:
    """Knobs of the automatic registration (defaults fit frames 160-1000 px wide)."""

    coarsest_width: int = 128  # the search runs at this width of the visible frame
    coarse_finest_width: int = 256  # rigid ECC stops at this width
    fine_widths: tuple[int, ...] = (512, 100_000)  # homography ECC widths (capped at full)
    blur_sigma: float = 1.0  # smoothing before the gradient, in pixels of each level
    post_sigma: float = 0.0  # smoothing of the gradient magnitude (widens ECC's basin)
    search_scale: float = 0.1  # the coarse search tries scales 1 +- this,
    search_rotation_deg: float = 6.0  # rotations up to +- this,
    search_shift: float = 0.15  # and shifts up to this fraction of the frame width
    iterations: int = 100  # ECC iterations per level
    epsilon: float = 1e-6  # ECC stops when the correlation improves less than this
    intensity_correlation: float = 0.8  # above this, intensities are related linearly (same
    # modality): a last ECC on the intensities themselves is more precise than on gradients
    intensity_sigmas: tuple[float, ...] = (2.0, 1.0, 0.5)  # blur of both frames (pixels) in
    # the passes of that last ECC: a wide basin first, then the least biased optimum
    final_iterations: int = 400  # that last ECC aims at hundredths of a pixel: more iterations
    final_epsilon: float = 1e-9  # and a tighter stop than the gradient levels
    keep_margin: float = 0.02  # to replace the start, the best candidate must gain this much
    # (mean per-tile Fisher z of the gradient correlation)
    min_gain_t: float = 3.0  # and this many standard errors of its per-tile gains
    score_tiles: int = 3  # tiles per side for those gains
    min_confidence: float = 0.2  # refuse below this full-resolution gradient correlation
    max_spread_px: float = 3.0  # several frames: refuse when their estimates disagree more


@dataclass
class AutoResult:
    """An automatic estimate: (3, 3) homography IR->visible, confidence (full-resolution
    gradient correlation, -1..1), residual_px (median distance of the per-frame estimates from
    the combined one at the IR image corners; 0 for one frame), frames used, per-frame
    homographies and the correlation of the starting homography."""

    homography: np.ndarray
    confidence: float
    residual_px: float
    frames_used: int
    per_frame: list[np.ndarray]
    start_confidence: float
    model: str


def gradient_magnitude(gray: np.ndarray, sigma: float, valid: np.ndarray | None = None,
                       post_sigma: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image -> ((H, W) float32 gradient magnitude, (H, W) uint8 valid mask).

    Pixels near the edge of ``valid`` (a (H, W) mask of real image content, nonzero = valid) are
    dropped from the mask and zeroed, so the border of a warped image is not taken for an edge.
    """
    image = gray.astype(np.float32)
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    if post_sigma > 0:
        magnitude = cv2.GaussianBlur(magnitude, (0, 0), post_sigma)
    if valid is None:
        return magnitude, np.full(gray.shape[:2], 255, np.uint8)
    margin = int(np.ceil(3 * (sigma + post_sigma))) + 2
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    # Outside the frame counts as valid: the frame's own border is not a warp border.
    inner = cv2.erode((np.asarray(valid) > 0).astype(np.uint8) * 255, kernel,
                      borderType=cv2.BORDER_CONSTANT, borderValue=255)
    magnitude[inner == 0] = 0
    return magnitude, inner


def _ecc(template: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray | None,
         warp: np.ndarray, motion: int, settings: AutoSettings) -> tuple[float, np.ndarray]:
    """One ``findTransformECC`` run; ``warp`` and the result are (3, 3) template->moving maps."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, settings.iterations,
                settings.epsilon)
    start = warp.astype(np.float32) if motion == cv2.MOTION_HOMOGRAPHY else \
        warp[:2].astype(np.float32)
    correlation, found = cv2.findTransformECC(template, moving, start, motion, criteria,
                                              moving_mask, 5)
    if motion != cv2.MOTION_HOMOGRAPHY:
        found = np.vstack([found, [0, 0, 1]])
    return float(correlation), found.astype(np.float64)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[1::-1] == tuple(size):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def pyramid_ecc(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
                ir_valid: np.ndarray, widths: list[int], motions: tuple[int, ...],
                settings: AutoSettings, search: bool = False, pad: bool = False
                ) -> tuple[np.ndarray, float]:
    """Global ECC over pyramid levels of the given visible widths, coarse to fine.

    (H_ir, W_ir) and (H_vis, W_vis) uint8 frames, a (3, 3) initial IR->visible homography ->
    (refined (3, 3) homography, final correlation). ``search``: start the first level with an
    exhaustive scale/rotation/shift search. ``pad``: surround the IR frame with zero gradient
    (counted valid), so that a warp pushing the visible frame's weak regions (sky, road) out of
    the IR frame loses correlation instead of gaining it by leaving them out; the coarse levels
    need it, at full resolution it costs precision.
    """
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    warp = np.linalg.inv(initial)  # ECC maps template (visible) pixels to input (IR) pixels
    correlation = 0.0
    for index, width in enumerate(widths):
        factor = min(1.0, width / vis_size[0])
        vis_level = (max(8, round(vis_size[0] * factor)), max(8, round(vis_size[1] * factor)))
        ir_level = (max(8, round(ir_size[0] * factor)), max(8, round(ir_size[1] * factor)))
        template, _ = gradient_magnitude(_resize(vis_frame, vis_level), settings.blur_sigma,
                                         post_sigma=settings.post_sigma)
        level_valid = np.where(_resize(ir_valid, ir_level) == 255, 255, 0).astype(np.uint8)
        moving, moving_mask = gradient_magnitude(_resize(ir_frame, ir_level),
                                                 settings.blur_sigma, level_valid,
                                                 post_sigma=settings.post_sigma)
        border = max(ir_level) // 4 if pad else 0
        moving = cv2.copyMakeBorder(moving, border, border, border, border,
                                    cv2.BORDER_CONSTANT, value=0)
        moving_mask = cv2.copyMakeBorder(moving_mask, border, border, border, border,
                                         cv2.BORDER_CONSTANT, value=255)
        to_vis = pixel_scaling(vis_size, vis_level)
        to_ir = np.array([[1, 0, border], [0, 1, border], [0, 0, 1.0]]) @ \
            pixel_scaling(ir_size, ir_level)
        level_warp = to_ir @ warp @ np.linalg.inv(to_vis)
        if search and index == 0:
            level_warp = _search_similarity(template, moving, moving_mask, level_warp, settings)
        for motion in motions:
            try:
                correlation, level_warp = _ecc(template, moving, moving_mask, level_warp,
                                               motion, settings)
            except cv2.error:
                # No convergence at this level: keep what the previous level found.
                break
        warp = np.linalg.inv(to_ir) @ level_warp @ to_vis
    return normalised(np.linalg.inv(warp)), correlation


def coarse_alignment(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
                     ir_valid: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """Search, then rigid ECC at small widths: a start within a few pixels for the fine stage.

    Rigid only: on cross-modal gradient maps the extra affine freedom (mostly vertical scale,
    poorly pinned by scenes whose structure sits in a horizontal band) drifts; the scale comes
    from the search.
    """
    widths = [settings.coarsest_width]
    while widths[-1] * 2 <= settings.coarse_finest_width:
        widths.append(widths[-1] * 2)
    homography, _ = pyramid_ecc(ir_frame, vis_frame, initial, ir_valid, widths,
                                (cv2.MOTION_TRANSLATION, cv2.MOTION_EUCLIDEAN), settings,
                                search=True, pad=True)
    return homography


def _registered_gradients(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                          ir_valid: np.ndarray | None, sigma: float
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible gradient magnitude, IR gradient magnitude warped by ``homography``, (H_vis,
    W_vis) bool mask of the pixels to compare), all in the visible frame's geometry."""
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    if ir_valid is None:
        ir_valid = np.full(ir_frame.shape[:2], 255, np.uint8)
    moving, moving_mask = gradient_magnitude(ir_frame, sigma, ir_valid)
    template, _ = gradient_magnitude(vis_frame, sigma)
    warped = cv2.warpPerspective(moving, homography, vis_size, flags=cv2.INTER_LINEAR)
    # Outside the IR frame is valid (zero gradient); inside, the eroded content mask decides.
    mask = cv2.warpPerspective(255 - moving_mask, homography, vis_size,
                               flags=cv2.INTER_NEAREST) == 0
    return template, warped, mask


def _correlation(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16 or first[mask].std() == 0 or second[mask].std() == 0:
        return 0.0
    return float(np.corrcoef(first[mask].ravel(), second[mask].ravel())[0, 1])


def alignment_score(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                    ir_valid: np.ndarray | None = None, sigma: float = 1.0) -> float:
    """Correlation coefficient of the gradient magnitudes of the visible frame and the IR frame
    warped by ``homography`` (IR->visible), over the visible frame. Visible pixels the IR frame
    does not reach count as zero gradient; pixels ``ir_valid`` marks invalid are left out.
    (H_ir, W_ir) and (H_vis, W_vis) uint8 -> float in [-1, 1]."""
    return _correlation(*_registered_gradients(ir_frame, vis_frame, homography, ir_valid, sigma))


def tile_scores(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                ir_valid: np.ndarray | None, sigma: float, tiles: int,
                intensity: bool = False) -> np.ndarray:
    """``alignment_score`` in each of ``tiles`` x ``tiles`` equal tiles of the visible frame:
    (tiles * tiles,) float64, 0 where a tile has too little content to score. ``intensity``:
    correlate the intensities over the valid IR content instead (same-modality pairs)."""
    if intensity:
        vis_size = (vis_frame.shape[1], vis_frame.shape[0])
        if ir_valid is None:
            ir_valid = np.full(ir_frame.shape[:2], 255, np.uint8)
        template = vis_frame.astype(np.float64)
        warped = cv2.warpPerspective(ir_frame, homography, vis_size,
                                     flags=cv2.INTER_LINEAR).astype(np.float64)
        mask = cv2.warpPerspective(ir_valid, homography, vis_size,
                                   flags=cv2.INTER_NEAREST) > 0
    else:
        template, warped, mask = _registered_gradients(ir_frame, vis_frame, homography,
                                                       ir_valid, sigma)
    rows = np.array_split(np.arange(template.shape[0]), tiles)
    columns = np.array_split(np.arange(template.shape[1]), tiles)
    return np.array([_correlation(template[np.ix_(r, c)], warped[np.ix_(r, c)],
                                  mask[np.ix_(r, c)]) for r in rows for c in columns])


def fisher_z(scores: np.ndarray) -> np.ndarray:
    """Fisher's z of correlation coefficients (any shape): equal steps mean equal evidence,
    so that 0.95 -> 0.99 counts like 0.3 -> 0.6."""
    return np.arctanh(np.clip(scores, -0.999, 0.999))


def significantly_better(gains: np.ndarray, settings: AutoSettings) -> bool:
    """Whether the (N,) per-tile gains (Fisher z) of one homography over another show a real
    improvement: a mean gain of at least ``keep_margin`` and ``min_gain_t`` standard errors.
    A gain in some tiles and a loss in others is what fitting parallax or noise looks like;
    a misaligned start loses everywhere."""
    mean = float(gains.mean())
    spread = float(gains.std(ddof=1)) / np.sqrt(len(gains))
    return mean >= settings.keep_margin and mean >= settings.min_gain_t * spread


def intensity_correlation(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                          ir_valid: np.ndarray) -> float:
    """Correlation coefficient of the raw intensities of the visible frame and the IR frame
    warped by ``homography`` (IR->visible), over the visible pixels with valid IR content.
    (H_ir, W_ir) and (H_vis, W_vis) uint8 -> float in [-1, 1]."""
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    warped = cv2.warpPerspective(ir_frame, homography, vis_size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(ir_valid, homography, vis_size, flags=cv2.INTER_NEAREST) > 0
    if mask.sum() < 16 or vis_frame[mask].std() == 0 or warped[mask].std() == 0:
        return 0.0
    return float(np.corrcoef(vis_frame[mask].astype(np.float64), warped[mask])[0, 1])


def intensity_refinement(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                         ir_valid: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """Full-resolution homography ECC on the intensities, from ``homography`` (IR->visible).

    Only for pairs whose intensities correlate (same modality): there the intensity is a smoother
    signal than its gradient magnitude, so the optimum is not biased by the resampling of sharp
    gradient peaks. One pass per blur of ``settings.intensity_sigmas``, widest first.
    (H_ir, W_ir) and (H_vis, W_vis) uint8 frames, (H_ir, W_ir) uint8 valid mask -> (3, 3)
    homography (the last converged pass's)."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, settings.final_iterations,
                settings.final_epsilon)
    for sigma in settings.intensity_sigmas:
        # The blur is done here rather than by ECC's own filter, which smears the black fill
        # across the mask border; pixels within its reach of the border are left out.
        template = cv2.GaussianBlur(vis_frame.astype(np.float32), (0, 0), sigma)
        moving = cv2.GaussianBlur(ir_frame.astype(np.float32), (0, 0), sigma)
        margin = int(np.ceil(3 * sigma)) + 2
        mask = cv2.erode(ir_valid, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8),
                         borderType=cv2.BORDER_CONSTANT, borderValue=255)
        try:
            _, warp = cv2.findTransformECC(template, moving,
                                           np.linalg.inv(homography).astype(np.float32),
                                           cv2.MOTION_HOMOGRAPHY, criteria, mask, 1)
        except cv2.error:
            return homography
        homography = normalised(np.linalg.inv(warp.astype(np.float64)))
    return homography


@dataclass
class PairFit:
    """The best-scoring estimate for one frame pair and the evidence for moving to it: (3, 3)
    homography and its model, full-resolution gradient scores of it and of the start, and the
    (tiles,) gains of its per-tile scores over the start's (Fisher z, see
    ``significantly_better``)."""

    homography: np.ndarray
    model: str
    score: float
    start_score: float
    tile_gains: np.ndarray


def fit_pair(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
             ir_valid: np.ndarray, settings: AutoSettings) -> PairFit:
    """The best candidate (start, rigid, homography) aligning one (H_ir, W_ir) uint8 IR frame to
    one (H_vis, W_vis) uint8 visible frame from the (3, 3) ``initial`` homography."""
    coarse = coarse_alignment(ir_frame, vis_frame, initial, ir_valid, settings)
    fine, _ = pyramid_ecc(ir_frame, vis_frame, coarse, ir_valid, list(settings.fine_widths),
                          (cv2.MOTION_HOMOGRAPHY,), settings)
    candidates = [("start", initial), ("rigid", coarse), ("homography", fine)]
    fine_intensity = intensity_correlation(ir_frame, vis_frame, fine, ir_valid)
    same_modality = fine_intensity > settings.intensity_correlation
    if same_modality:
        refined = intensity_refinement(ir_frame, vis_frame, fine, ir_valid, settings)
        # A pass can run away on a nearly featureless frame: drop it when it fits clearly
        # worse (a small loss is the raw, unblurred correlation disagreeing with ECC's).
        if intensity_correlation(ir_frame, vis_frame, refined, ir_valid) >= \
                fine_intensity - 0.01:
            candidates[-1] = ("homography", refined)
    scores = [alignment_score(ir_frame, vis_frame, h, ir_valid, settings.blur_sigma)
              for _, h in candidates]
    # Same modality: the intensities are the stronger evidence (gradients of noise, as in
    # smoke or fog, barely correlate after resampling).
    per_tile = [fisher_z(tile_scores(ir_frame, vis_frame, h, ir_valid, settings.blur_sigma,
                                     settings.score_tiles, intensity=same_modality))
                for _, h in candidates]
    best = int(np.argmax([tiles.mean() for tiles in per_tile] if same_modality else scores))
    return PairFit(homography=candidates[best][1], model=candidates[best][0],
                   score=scores[best], start_score=scores[0],
                   tile_gains=per_tile[best] - per_tile[0])


def register_pair(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
                  ir_valid: np.ndarray, settings: AutoSettings
                  ) -> tuple[np.ndarray, float, float, str]:
    """Align one (H_ir, W_ir) uint8 IR frame to one (H_vis, W_vis) uint8 visible frame from the
    (3, 3) ``initial`` homography. Returns (homography, its score, the initial's score, model);
    an already-aligned pair keeps ``initial``: moving must pay off significantly."""
    fit = fit_pair(ir_frame, vis_frame, initial, ir_valid, settings)
    if significantly_better(fit.tile_gains, settings):
        return fit.homography, fit.score, fit.start_score, fit.model
    return initial, fit.start_score, fit.start_score, "start"


def register_frames(ir_frames: list[np.ndarray], vis_frames: list[np.ndarray],
                    initial: np.ndarray | None = None,
                    ir_valid: list[np.ndarray] | None = None,
                    settings: AutoSettings | None = None, progress=None) -> AutoResult:
    """One IR->visible homography from one or more frame pairs of a fixed camera pair.

    ``ir_frames``: (H_ir, W_ir) uint8 each; ``vis_frames``: (H_vis, W_vis) uint8 each;
    ``initial``: a starting (3, 3) homography (default: stretch the IR frame over the visible
    one); ``ir_valid``: optional (H_ir, W_ir) masks of IR pixels with real content;
    ``progress``: optional callable run after each frame pair. Judge the result with
    ``check_reliable``. Whether to move from ``initial`` at all is decided once, on the
    per-tile gains of all frames pooled (more frames, more power to see a small correction).
    """
    settings = settings or AutoSettings()
    if not ir_frames or len(ir_frames) != len(vis_frames):
        raise StreamFuseError("automatic registration needs the same number (>= 1) of IR and "
                              "visible frames")
    ir_size = (ir_frames[0].shape[1], ir_frames[0].shape[0])
    vis_size = (vis_frames[0].shape[1], vis_frames[0].shape[0])
    if initial is None:
        initial = pixel_scaling(ir_size, vis_size)
    if ir_valid is None:
        ir_valid = [np.full(frame.shape[:2], 255, np.uint8) for frame in ir_frames]
    ir_valid = [(np.asarray(mask) > 0).astype(np.uint8) * 255 for mask in ir_valid]
    fits = []
    for ir, vis, valid in zip(ir_frames, vis_frames, ir_valid):
        fits.append(fit_pair(ir, vis, initial, valid, settings))
        if progress is not None:
            progress()
    start_confidence = float(np.median([fit.start_score for fit in fits]))
    if not significantly_better(np.concatenate([fit.tile_gains for fit in fits]), settings):
        return AutoResult(homography=normalised(initial), confidence=start_confidence,
                          residual_px=0.0, frames_used=len(fits),
                          per_frame=[initial] * len(fits), start_confidence=start_confidence,
                          model="start")
    estimates = [fit.homography for fit in fits]
    if len(estimates) == 1:
        combined, spread = estimates[0], 0.0
    else:
        combined, spread = combine_estimates(estimates, ir_size)
    models = [fit.model for fit in fits]
    return AutoResult(
        homography=combined,
        confidence=float(np.median([fit.score for fit in fits])),
        residual_px=spread,
        frames_used=len(estimates),
        per_frame=estimates,
        start_confidence=start_confidence,
        model=max(set(models), key=models.count),
    )


def combine_estimates(homographies: list[np.ndarray], ir_size: tuple[int, int]
                      ) -> tuple[np.ndarray, float]:
    """Robust average of several IR->visible homographies: the median position of each IR image
    corner, refitted exactly. Returns (homography, residual_px), residual_px being the median
    over frames of the mean corner distance from the combined estimate."""
    corners = image_corners(ir_size)
    placed = np.stack([transform_points(h, corners) for h in homographies])  # (N, 4, 2)
    median_corners = np.median(placed, axis=0)
    combined, _ = cv2.findHomography(corners, median_corners, 0)
    distances = np.linalg.norm(placed - median_corners, axis=2).mean(axis=1)
    return normalised(combined), float(np.median(distances))


def check_reliable(result: AutoResult, settings: AutoSettings | None = None) -> None:
    """Raise a one-line StreamFuseError when ``result`` should not be written as a calibration."""
    settings = settings or AutoSettings()
    advice = "no file written; use --points or --board, or frames of a scene with more structure"
    if result.confidence < settings.min_confidence:
        raise StreamFuseError(
            f"automatic registration is unreliable: gradient correlation {result.confidence:.2f}"
            f" < {settings.min_confidence} (blank, featureless or unrelated frames?): {advice}")
    if result.residual_px > settings.max_spread_px:
        raise StreamFuseError(
            f"automatic registration is unreliable: the {result.frames_used} frame pairs "
            f"disagree by {result.residual_px:.1f} px (> {settings.max_spread_px}): {advice}")


def _search_similarity(template: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray,
                       warp: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """Exhaustive start for the coarsest level: try a grid of scales and rotations about the
    template centre, find the best shift of each by normalised cross-correlation, keep the best.
    (ECC only converges from a start close to the answer.)"""
    height, width = template.shape
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    margin = int(np.ceil(settings.search_shift * width))
    inner = template[margin:height - margin, margin:width - margin]
    if inner.std() < 1e-6:
        return warp
    best_score, best_warp = -np.inf, warp
    for scale in np.linspace(1 - settings.search_scale, 1 + settings.search_scale, 9):
        for angle in np.deg2rad(np.linspace(-settings.search_rotation_deg,
                                            settings.search_rotation_deg, 5)):
            cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
            about_centre = np.array([[cos, -sin, centre[0] - cos * centre[0] + sin * centre[1]],
                                     [sin, cos, centre[1] - sin * centre[0] - cos * centre[1]],
                                     [0, 0, 1.0]])
            candidate = warp @ about_centre  # template -> moving
            resampled = cv2.warpPerspective(moving * (moving_mask > 0), candidate,
                                            (width, height),
                                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            scores = cv2.matchTemplate(resampled, inner, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(scores)
            if score > best_score:
                shift = np.array([[1, 0, x - margin], [0, 1, y - margin], [0, 0, 1.0]])
                best_score, best_warp = score, candidate @ shift
    return best_warp


