"""Target-free IR->visible registration: multi-scale ECC on gradient-orientation maps.

Thermal and visible intensities are unrelated, and so are their edge strengths (a wall that is
bright in daylight may be a faint step in thermal), but both cameras see the same object
outlines, often with opposite contrast. Each frame is therefore turned into a normalised
gradient field in double-angle form: (cos 2a, sin 2a) of the gradient angle a, weighted by
e / (e + e_noise) of the gradient energy e (``ecc.orientation_features``). The sign of the gradient
drops out (2a), strong and medium edges count alike, noise (below the frame's median energy)
hardly counts. Their correlation is what is aligned and scored. Coarse to fine:

1. Coarse: an exhaustive scale/rotation/shift search at a small pyramid level, then similarity
   ECC up to a medium level, from the few best search hits, and an affine pass there (sensors
   of other aspect ratios need unequal scales); the best one is kept.
2. Fine: homography ECC at 320 and 640 px width (at most the full width; a full-width level
   with the ``score_sigma`` smoothing), each on a regular grid of at most ``max_samples``
   pixels; three times, with other blurs and widths (``fine_schedules``), each end then run
   to convergence at full width (ECC creeps on weak scenes), keeping the best.

ECC (enhanced correlation coefficient maximisation, Evangelidis & Psarakis 2008, the algorithm
of ``cv2.findTransformECC``) runs on the two-channel maps (``ecc.ecc_multichannel``; OpenCV's takes
one channel). Same-modality pairs (intensities correlate) get a last full-resolution ECC on the
intensities, resampled bicubically. Each candidate (the given start, the coarse one, the fine
one) is scored at full resolution, overall and in 3 x 3 tiles. The best one replaces the start
only if the start loses significantly (``min_gain_t`` standard errors of the per-tile
differences) even against the best one misaligned by ``keep_px``: an already-aligned pair keeps
its homography, and parallax or noise is not fitted as a correction. A start scoring below the
refusal floor (``min_confidence``) is not protected: it could not be written itself. When the
coarse candidates end at different places with about equal scores (``ambiguous``), the frame
says nothing. Several frame pairs are combined by the median position of the IR image corners.
The residual written with the result is the frames' disagreement, and for a single frame pair
how far the fit moves when the objective sees slightly other data (``sensitivity``: another
feature blur, the frame's outer band left out). ``check_reliable`` refuses weak, ambiguous or
inconsistent results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import cv2
import numpy as np

from streamfuse.calibration import image_corners
from streamfuse.errors import StreamFuseError
from streamfuse.registration.ecc import (
    content_mask, ecc_multichannel, orientation_features, resize_area,
)
from streamfuse.registration.geometry import (
    corner_error, normalised, pixel_scaling, square_pixel_scaling, transform_points,
)
from streamfuse.registration.tasks import TaskMap, TaskPool, in_this_process


@dataclass
class AutoSettings:
    """Knobs of the automatic registration (defaults fit frames 160-1000 px wide)."""

    coarsest_width: int = 160  # the search runs at this width of the visible frame
    coarse_finest_width: int = 320  # similarity ECC stops at this width
    # Homography ECC runs from the coarse estimate once per schedule: (blur sigma of its levels
    # below full width, level widths capped at the full width); the best full-resolution score
    # is kept. Where the scene is weak the fine optimum has local traps, and which schedule
    # escapes them varies from scene to scene.
    fine_schedules: tuple[tuple[float, tuple[int, ...]], ...] = (
        (1.0, (320, 640)), (2.0, (320, 640)), (1.0, (160, 320, 640)))
    # Each schedule's end is then run to convergence at full width (score_sigma smoothing, at
    # most settle_iterations, until no corner moves settle_epsilon px): on weak scenes ECC
    # creeps along flat directions, and 40 iterations left ends 10-14 px short (TNO 13)
    settle_iterations: int = 300
    settle_epsilon: float = 0.01
    schedule_tie: float = 0.005  # settled ends scoring within this of the best one tie; how far
    max_uncertainty_px: float = 1.5  # they end from it (mean corner distance) is the fit's
    # uncertainty, and --auto refuses to move by a fit more uncertain than this
    blur_sigma: float = 1.0  # smoothing before the gradient, in pixels of each pyramid level
    score_sigma: float = 2.0  # the same at full resolution for the scores and the last level
    # (fine noise, e.g. of a night-time visible camera, would otherwise dominate the gradients)
    # The coarse search tries scales from 1 / search_scale_ratio to search_scale_ratio, this
    # ratio apart (a geometric grid): the IR camera's field of view may be up to 1.6 times
    # narrower or wider than the visible one's. Scales 0.9-1.1 (until session 29) lost
    # nearly every pair at 0.7 or 1.4.
    search_scale_ratio: float = 1.6
    search_scale_step: float = 1.02
    # Frames whose aspect ratios differ by more than this ratio (a 5:4 thermal camera beside a
    # 16:9 visible one) are also searched about a fit with square pixels on both sides: the
    # search adds only equal scales to the start, and stretching one frame over the other
    # leaves unequal ones (bench/calibration_aspect.py: 40 of 60 such runs right, 23 without).
    square_pixel_aspect_ratio: float = 1.02
    # A visible frame with far more pixels than the IR one (a 160x120 thermal camera beside a
    # 1280x720 visible one) is fitted reduced (area-averaged) until the IR frame stretched over
    # it is upsampled at most this much (linear): the visible frame's fine texture has no
    # counterpart in the blurred IR edges, and at 1280x720 nearly every such pair was refused
    # (bench/calibration_resolution.py). Pixel thresholds (uncertainty, spread, residual
    # warning, patch agreement) then hold in the reduced frame's pixels.
    max_ir_upsampling: float = 2.0
    search_rotation_deg: float = 6.0  # rotations up to +- this,
    search_rotation_steps: int = 9
    search_shift: float = 0.12  # and shifts up to this fraction of the frame width
    max_samples: int = 40_000  # ECC uses a regular grid of about this many pixels per level
    search_candidates: int = 4  # the best distinct search hits refined by the coarse ECC
    ambiguity_px: float = 3.0  # a coarse candidate ending further than this from the best (mean
    ambiguity_ratio: float = 0.9  # corner distance) and correlating within this ratio of it is
    # refined too (``rivals``); if refined it still scores within the ratio: ambiguous
    iterations: int = 40  # ECC iterations per level
    epsilon: float = 0.05  # ECC stops when no corner moves more than this (level pixels);
    # the correlation is flat along the perspective terms, a tighter stop only costs time
    intensity_correlation: float = 0.8  # above this, intensities are related linearly (same
    # modality): a last ECC on the intensities themselves is more precise than on gradients
    intensity_sigmas: tuple[float, ...] = (2.0, 1.0, 0.5)  # blur of both frames (pixels) in
    # the passes of that last ECC: a wide basin first, then the least biased optimum
    final_iterations: int = 100  # that last ECC aims at hundredths of a pixel: more iterations
    final_epsilon: float = 1e-3  # and a tighter stop (level pixels) than the gradient levels
    intensity_score_sigma: float = 1.0  # same modality: candidates are scored on intensities
    # blurred this much. Bilinear resampling smooths by an amount that varies with the
    # sub-pixel phase; unblurred, that favours whole-pixel positions (flir-train 30's copy
    # scored higher 0.37 px off than at the truth)
    refined_tolerance: float = 0.01  # the homography replaces the affine fit unless it scores
    # this much lower (gradient correlation; Fisher z of the intensity one, same modality)
    keep_px: float = 1.0  # to replace the start, the best candidate shifted by this many
    # visible pixels must still beat it
    keep_margin: float = 0.0  # by this much (mean per-tile Fisher z of the correlation)
    min_gain_t: float = 3.0  # and this many standard errors of its per-tile gains
    score_tiles: int = 3  # tiles per side for those gains
    min_confidence: float = 0.15  # refuse below this full-resolution orientation correlation
    # The registered pair is cut into agreement_grid x agreement_grid patches; a patch with
    # structure supports the result when its own best shift (within +-agreement_search px)
    # is at most agreement_px long. Refuse when fewer than min_agreement of them do: a
    # chance alignment of two views that share little (another scene, another moment, a much
    # wider lens) scores a fair correlation on a few strong lines, but few patches agree.
    agreement_grid: int = 8
    agreement_search: int = 6
    agreement_px: float = 2.5
    min_agreement: float = 0.25
    max_spread_px: float = 3.0  # several frames: refuse when their estimates disagree more
    # The residual of a fit from one frame pair (several: their disagreement): the largest
    # move of the fit when it is settled again with the features blurred by each of
    # sensitivity_sigmas instead of score_sigma, and with the outer sensitivity_band (fraction
    # of width and height, each side) of the IR frame left out. Same modality: the last
    # intensity pass with intensity_sensitivity_sigma instead of its blur, and with the band
    # left out. On the bench's weak scenes the optimum moves pixels with the blur and with the
    # content (bench/calibration_determinacy.py), and so does the fit: 90.8 % of the bench's
    # IR-vs-visible files are within this residual of their reference (calibration/README.md).
    # It costs a few full-resolution ECC runs; measure_sensitivity=False skips it.
    sensitivity_sigmas: tuple[float, ...] = (1.0, 3.0)
    sensitivity_band: float = 0.05
    intensity_sensitivity_sigma: float = 1.0
    measure_sensitivity: bool = True
    # A file whose residual exceeds this is written with a warning, not refused: on the bench
    # (session 17) a 3 px bar would flag 2 of the 3 wrong IR-vs-visible files but also 12 of
    # the 95 right ones.
    warn_residual_px: float = 3.0


@dataclass
class AutoResult:
    """An automatic estimate: (3, 3) homography IR->visible, confidence (full-resolution
    orientation correlation, -1..1), spread_px (median distance of the per-frame estimates
    from the combined one at the IR image corners; 0 for one frame), sensitivity_px (see
    ``sensitivity``; measured for one frame pair only, else 0), frames used, per-frame
    homographies and the correlation of the starting homography; ``ambiguous_frames``: frame
    pairs left out because their scene matched at several places (see ``ambiguous``);
    ``structured_patches`` and ``agreeing_patches``: see ``local_agreement``."""

    homography: np.ndarray
    confidence: float
    spread_px: float
    frames_used: int
    per_frame: list[np.ndarray]
    start_confidence: float
    model: str
    ambiguous_frames: int = 0
    uncertainty_px: float = 0.0  # of the fine stage (``fine_alignments``): the median over
    # the n frames used, / sqrt(n); 0 when the start is kept
    structured_patches: int = 0  # over all frames used: patches with structure,
    agreeing_patches: int = 0  # and those supporting the homography (``local_agreement``)
    sensitivity_px: float = 0.0
    fit_size: tuple[int, int] | None = None  # (width, height) the visible frames were
    # reduced to for the fit (``working_size``); None: fitted at full size
    fit_pixel_px: float = 1.0  # one pixel of that size, in visible pixels

    @property
    def residual_px(self) -> float:
        """The error estimate written with the calibration: the larger of the frames'
        disagreement and the fit's sensitivity."""
        return max(self.spread_px, self.sensitivity_px)

    @property
    def residual_basis(self) -> str:
        """What ``residual_px`` measures, in words."""
        if self.frames_used == 1:
            return ("how far the fit moves with another feature blur or without the frame's "
                    "outer band")
        return "the frame pairs' disagreement"

    @property
    def agreement(self) -> float:
        """Fraction of the structured patches that support the homography (0 without any)."""
        return self.agreeing_patches / self.structured_patches if self.structured_patches else 0.0


@dataclass
class _Level:
    """One pyramid level: features of both frames and the maps between level and full pixels."""

    template: np.ndarray  # (h_vis, w_vis, 2) visible features
    moving: np.ndarray  # (h_ir + 2 b, w_ir + 2 b, 2) IR features, padded by b
    moving_mask: np.ndarray
    to_vis: np.ndarray  # full visible pixels -> level visible pixels
    to_ir: np.ndarray  # full IR pixels -> level (padded) IR pixels


def _level(ir_frame: np.ndarray, vis_frame: np.ndarray, ir_valid: np.ndarray, width: int,
           sigma: float, pad: bool) -> _Level:
    """Features at the level where the visible frame is ``width`` wide (at most full size).
    ``pad``: surround the IR features with zeros counted valid, so that a warp pushing the
    visible frame's weak regions (sky, road) out of the IR frame loses correlation instead of
    gaining it by leaving them out."""
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    factor = min(1.0, width / vis_size[0])
    vis_level = (max(8, round(vis_size[0] * factor)), max(8, round(vis_size[1] * factor)))
    ir_level = (max(8, round(ir_size[0] * factor)), max(8, round(ir_size[1] * factor)))
    template, _ = orientation_features(resize_area(vis_frame, vis_level), sigma)
    level_valid = np.where(resize_area(ir_valid, ir_level) == 255, 255, 0).astype(np.uint8)
    moving, moving_mask = orientation_features(resize_area(ir_frame, ir_level), sigma, level_valid)
    border = max(ir_level) // 4 if pad else 0
    moving = cv2.copyMakeBorder(moving, border, border, border, border, cv2.BORDER_CONSTANT,
                                value=0)
    moving_mask = cv2.copyMakeBorder(moving_mask, border, border, border, border,
                                     cv2.BORDER_CONSTANT, value=255)
    to_ir = np.array([[1, 0, border], [0, 1, border], [0, 0, 1.0]]) @ \
        pixel_scaling(ir_size, ir_level)
    return _Level(template, moving, moving_mask, pixel_scaling(vis_size, vis_level), to_ir)


def _to_level(homography: np.ndarray, level: _Level) -> np.ndarray:
    """IR->visible homography in full pixels -> the level's visible->IR warp (ECC's direction)."""
    return level.to_ir @ np.linalg.inv(homography) @ np.linalg.inv(level.to_vis)


def _from_level(warp: np.ndarray, level: _Level) -> np.ndarray:
    return normalised(np.linalg.inv(np.linalg.inv(level.to_ir) @ warp @ level.to_vis))


def _level_ecc(level: _Level, homography: np.ndarray, model: str, settings: AutoSettings
               ) -> tuple[np.ndarray, float]:
    """ECC at one level from an IR->visible homography: (refined homography, correlation);
    the start itself (and correlation -1) when ECC does not converge."""
    try:
        correlation, warp = ecc_multichannel(level.template, level.moving,
                                             _to_level(homography, level),
                                             moving_mask=level.moving_mask, model=model,
                                             iterations=settings.iterations,
                                             epsilon=settings.epsilon,
                                             max_samples=settings.max_samples)
    except (cv2.error, np.linalg.LinAlgError):
        return homography, -1.0
    return _from_level(warp, level), correlation


def _widths(first: int, last: int) -> list[int]:
    widths = [first]
    while widths[-1] * 2 <= last:
        widths.append(widths[-1] * 2)
    return widths


def _similarity_through(levels: list[_Level], settings: AutoSettings, homography: np.ndarray
                        ) -> tuple[np.ndarray, float]:
    """Similarity ECC through ``levels`` in turn from an IR->visible homography: (the end, its
    correlation at the last level)."""
    correlation = -1.0
    for level in levels:
        homography, correlation = _level_ecc(level, homography, "similarity", settings)
    return homography, correlation


def _affine_at(level: _Level, settings: AutoSettings, homography: np.ndarray
               ) -> tuple[np.ndarray, float]:
    return _level_ecc(level, homography, "affine", settings)


def coarse_candidates(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
                      ir_valid: np.ndarray, settings: AutoSettings,
                      map_tasks: TaskMap = in_this_process
                      ) -> list[tuple[np.ndarray, float]]:
    """Search about the start (and about ``square_pixel_scaling`` too when the frames' shapes
    differ, see ``square_pixel_aspect_ratio``), then similarity ECC at small widths from each of
    those and from the ``search_candidates`` best search hits about each, and an affine pass at
    the last coarse level from each distinct end: [(IR->visible homography, correlation at the
    last coarse level)], best first. Where the scene pins the alignment, they all end at one
    place. ``map_tasks`` runs the starts (see ``TaskPool``)."""
    levels = [_level(ir_frame, vis_frame, ir_valid, width, settings.blur_sigma, pad=True)
              for width in _widths(settings.coarsest_width, settings.coarse_finest_width)]
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    searched_about = [initial]
    aspect_change = (vis_size[0] / vis_size[1]) / (ir_size[0] / ir_size[1])
    if max(aspect_change, 1 / aspect_change) > settings.square_pixel_aspect_ratio:
        searched_about.append(square_pixel_scaling(ir_size, vis_size))
    starts = searched_about + [
        _from_level(warp, levels[0]) for about in searched_about
        for warp in search_similarity(levels[0].template, levels[0].moving,
                                      levels[0].moving_mask, _to_level(about, levels[0]),
                                      settings)]
    refined = map_tasks(partial(_similarity_through, levels, settings), starts)
    # Starts that ended at one place are one candidate (mean corner distance below a pixel).
    distinct: list[np.ndarray] = []
    for homography, _ in sorted(refined, key=lambda candidate: -candidate[1]):
        if all(corner_error(homography, kept, ir_size) > 1.0 for kept in distinct):
            distinct.append(homography)
    # Sensors of other aspect ratios, resized to one frame size, need unequal scales: a last
    # affine pass (a similarity stopped up to 16 px from the truth on TNO pairs).
    return sorted(map_tasks(partial(_affine_at, levels[-1], settings), distinct),
                  key=lambda candidate: -candidate[1])


def rivals(candidates: list[tuple[np.ndarray, float]], ir_size: tuple[int, int],
           settings: AutoSettings) -> list[np.ndarray]:
    """The coarse candidates that could be another answer: ending more than ``ambiguity_px``
    from the best one and from each other (mean corner distance), with a correlation of at
    least ``ambiguity_ratio`` of the best; [] when the best does not correlate at all."""
    best, best_correlation = candidates[0]
    found: list[np.ndarray] = []
    if best_correlation <= 0:
        return found
    for homography, correlation in candidates[1:]:
        if correlation >= settings.ambiguity_ratio * best_correlation and all(
                corner_error(homography, kept, ir_size) > settings.ambiguity_px
                for kept in [best, *found]):
            found.append(homography)
    return found


def ambiguous(ends: list[tuple[np.ndarray, float]], ir_size: tuple[int, int],
              settings: AutoSettings) -> bool:
    """Whether another refined end, more than ``ambiguity_px`` from the best one (mean corner
    distance), scores almost as well (``ambiguity_ratio`` of the best) at full resolution: the
    scene matches at two places (repetitive structure, or too little shared structure to
    tell), so neither can be trusted. ``ends``: [(homography, score)], best first."""
    best, best_score = ends[0]
    if best_score <= 0:
        return True
    return any(score >= settings.ambiguity_ratio * best_score and
               corner_error(homography, best, ir_size) > settings.ambiguity_px
               for homography, score in ends[1:])


def fine_end(ir_frame: np.ndarray, vis_frame: np.ndarray, ir_valid: np.ndarray,
             settings: AutoSettings, start_and_schedule: tuple[np.ndarray, tuple]
             ) -> tuple[float, np.ndarray]:
    """One of the ``fine_schedules`` (blur sigma, widths) from a start, IR->visible: homography
    ECC at each width (a full-width level with the ``score_sigma`` smoothing), the end settled
    by ECC at full width until it stops moving (``settle_iterations``, ``settle_epsilon``):
    (its full-resolution ``alignment_score``, the settled homography)."""
    start, (blur_sigma, schedule_widths) = start_and_schedule
    homography = start
    for width in sorted({min(width, vis_frame.shape[1]) for width in schedule_widths}):
        sigma = settings.score_sigma if width >= vis_frame.shape[1] else blur_sigma
        level = _level(ir_frame, vis_frame, ir_valid, width, sigma, pad=False)
        homography, _ = _level_ecc(level, homography, "homography", settings)
    full = _level(ir_frame, vis_frame, ir_valid, vis_frame.shape[1], settings.score_sigma,
                  pad=False)
    homography = _settle(full, homography, settings)
    return (alignment_score(ir_frame, vis_frame, homography, ir_valid, settings.score_sigma),
            homography)


def best_end(ends: list[tuple[float, np.ndarray]], ir_size: tuple[int, int],
             settings: AutoSettings) -> tuple[np.ndarray, float, float]:
    """The settled ends of one start's schedules ``[(score, homography)]`` -> (the best-scoring
    homography, its score, its uncertainty): the largest mean corner distance from it of the
    ends that score within ``schedule_tie`` of it."""
    best_score, best = max(ends, key=lambda end: end[0])
    uncertainty = max(corner_error(homography, best, ir_size) for score, homography in ends
                      if score >= best_score - settings.schedule_tie)
    return best, best_score, uncertainty


def fine_alignments(ir_frame: np.ndarray, vis_frame: np.ndarray, start: np.ndarray,
                    ir_valid: np.ndarray, settings: AutoSettings
                    ) -> tuple[np.ndarray, float, float]:
    """The fine stage from ``start``: each of the ``fine_schedules`` run and settled
    (``fine_end``), IR->visible: (the settled end with the best full-resolution score, that
    score, its uncertainty, see ``best_end``). Where the scene pins the homography down, every
    schedule ends at one place; on a weak scene they settle pixels apart with the same score
    (separate optima), and no score can tell which is right. Unsettled, ends that are still
    creeping towards one optimum would look like that too."""
    return fine_alignments_from([start], ir_frame, vis_frame, ir_valid, settings)[0]


def fine_alignments_from(starts: list[np.ndarray], ir_frame: np.ndarray, vis_frame: np.ndarray,
                         ir_valid: np.ndarray, settings: AutoSettings,
                         map_tasks: TaskMap = in_this_process
                         ) -> list[tuple[np.ndarray, float, float]]:
    """``fine_alignments`` from each of ``starts``, all their schedules handed to ``map_tasks``
    at once."""
    schedules = settings.fine_schedules
    ends = map_tasks(partial(fine_end, ir_frame, vis_frame, ir_valid, settings),
                     [(start, schedule) for start in starts for schedule in schedules])
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    return [best_end(ends[index:index + len(schedules)], ir_size, settings)
            for index in range(0, len(ends), len(schedules))]


def _settle(level: _Level, homography: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """Homography ECC at ``level`` from ``homography`` until no corner moves
    ``settle_epsilon`` (at most ``settle_iterations``): the optimum it creeps towards."""
    settle = replace(settings, iterations=settings.settle_iterations,
                     epsilon=settings.settle_epsilon)
    return _level_ecc(level, homography, "homography", settle)[0]


def settled(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
            ir_valid: np.ndarray, settings: AutoSettings, sigma: float | None = None
            ) -> np.ndarray:
    """The full-resolution optimum of the orientation correlation nearest ``homography``
    (IR->visible), as the fine stage settles its ends; ``sigma``: feature blur (default
    ``score_sigma``). (H_ir, W_ir) and (H_vis, W_vis) uint8 frames, (H_ir, W_ir) uint8 valid
    mask -> (3, 3) homography."""
    level = _level(ir_frame, vis_frame, ir_valid, vis_frame.shape[1],
                   settings.score_sigma if sigma is None else sigma, pad=False)
    return _settle(level, homography, settings)


def search_similarity(template: np.ndarray, moving: np.ndarray, moving_mask: np.ndarray,
                      warp: np.ndarray, settings: AutoSettings) -> list[np.ndarray]:
    """Exhaustive start for the coarsest level: a grid of scales and rotations about the template
    centre, the best shift of each by normalised cross-correlation of the (H, W, C) feature maps
    (``cv2.matchTemplate``, channels summed). Returns the ``search_candidates`` best (3, 3)
    template->moving warps, each more than a few pixels from the others (ECC only converges
    from a start close to the answer; a repetitive scene has several good-looking ones)."""
    height, width = template.shape[:2]
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    margin = int(np.ceil(settings.search_shift * width))
    inner = np.ascontiguousarray(template[margin:height - margin, margin:width - margin])
    if inner.std() < 1e-6:
        return []
    masked = moving * (moving_mask > 0)[..., None]
    hits = []
    steps = int(np.ceil(np.log(settings.search_scale_ratio) / np.log(settings.search_scale_step)))
    for scale in np.geomspace(1 / settings.search_scale_ratio, settings.search_scale_ratio,
                              2 * steps + 1):
        for angle in np.deg2rad(np.linspace(-settings.search_rotation_deg,
                                            settings.search_rotation_deg,
                                            settings.search_rotation_steps)):
            cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
            about_centre = np.array([[cos, -sin, centre[0] - cos * centre[0] + sin * centre[1]],
                                     [sin, cos, centre[1] - sin * centre[0] - cos * centre[1]],
                                     [0, 0, 1.0]])
            candidate = warp @ about_centre  # template -> moving
            resampled = cv2.warpPerspective(masked, candidate, (width, height),
                                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            scores = cv2.matchTemplate(resampled, inner, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(scores)
            shift = np.array([[1, 0, x - margin], [0, 1, y - margin], [0, 0, 1.0]])
            hits.append((score, candidate @ shift))
    hits.sort(key=lambda hit: -hit[0])
    corners = image_corners((width, height))
    chosen: list[np.ndarray] = []
    for _, candidate in hits:
        placed = transform_points(candidate, corners)
        if all(np.abs(placed - transform_points(other, corners)).max() > 2 for other in chosen):
            chosen.append(candidate)
        if len(chosen) == settings.search_candidates:
            break
    return chosen


def _registered_features(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                         ir_valid: np.ndarray | None, sigma: float
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible features, features of the IR frame warped by ``homography``, (H_vis, W_vis) bool
    mask of the pixels to compare), all in the visible frame's geometry. Visible pixels the IR
    frame does not reach count (as zero features); pixels ``ir_valid`` marks invalid do not."""
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    if ir_valid is None:
        ir_valid = np.full(ir_frame.shape[:2], 255, np.uint8)
    warped = cv2.warpPerspective(ir_frame, homography, vis_size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full(ir_frame.shape[:2], 255, np.uint8), homography,
                                 vis_size, flags=cv2.INTER_NEAREST)
    content = cv2.warpPerspective(ir_valid, homography, vis_size, flags=cv2.INTER_NEAREST)
    moving, _ = orientation_features(warped, sigma, content)
    template, _ = orientation_features(vis_frame, sigma)
    margin = int(np.ceil(3 * sigma)) + 2
    # The IR frame's outline is no edge: features within reach of it are zeroed; outside it
    # they stay zero and count, inside, invalid content is left out.
    near_outline = cv2.dilate(cv2.morphologyEx(inside, cv2.MORPH_GRADIENT,
                                               np.ones((3, 3), np.uint8)),
                              np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
    moving[near_outline] = 0
    eroded_content = content_mask(content.shape, content, margin)
    mask = (inside == 0) | (eroded_content > 0)
    return template, moving, mask


def _correlation(first: np.ndarray, second: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16:
        return 0.0
    a, b = first[mask].ravel().astype(np.float64), second[mask].ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.einsum("i,i->", a, a) * np.einsum("i,i->", b, b))
    return float(np.einsum("i,i->", a, b) / norm) if norm > 0 else 0.0


def alignment_score(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                    ir_valid: np.ndarray | None = None, sigma: float = 2.0) -> float:
    """Correlation coefficient of the orientation features (``orientation_features``) of the
    visible frame and of the IR frame warped by ``homography`` (IR->visible), over the visible
    frame. (H_ir, W_ir) and (H_vis, W_vis) uint8 -> float in [-1, 1]."""
    return _correlation(*_registered_features(ir_frame, vis_frame, homography, ir_valid, sigma))


def _tiles(shape: tuple[int, int], tiles: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = np.array_split(np.arange(shape[0]), tiles)
    columns = np.array_split(np.arange(shape[1]), tiles)
    return [(r, c) for r in rows for c in columns]


def tile_scores(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                ir_valid: np.ndarray | None, sigma: float, tiles: int,
                intensity: bool = False) -> np.ndarray:
    """``alignment_score`` in each of ``tiles`` x ``tiles`` equal tiles of the visible frame:
    (tiles * tiles,) float64, 0 where a tile has too little content to score. ``intensity``:
    correlate the intensities, both blurred by ``sigma``, over the valid IR content instead
    (same-modality pairs)."""
    if intensity:
        template, warped, mask = _registered_intensities(ir_frame, vis_frame, homography,
                                                         ir_valid, sigma)
    else:
        template, warped, mask = _registered_features(ir_frame, vis_frame, homography,
                                                      ir_valid, sigma)
    return np.array([_correlation(template[np.ix_(r, c)], warped[np.ix_(r, c)],
                                  mask[np.ix_(r, c)])
                     for r, c in _tiles(template.shape[:2], tiles)])


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


def _warped_content(ir_valid: np.ndarray, homography: np.ndarray, vis_size: tuple[int, int]
                    ) -> np.ndarray:
    """(H_vis, W_vis) bool: visible pixels with valid IR content after ``homography``, less
    3 px along its border, where the bilinear resampling (of a warped frame, and here) mixes
    in the black fill."""
    mask = cv2.warpPerspective(ir_valid, homography, vis_size, flags=cv2.INTER_NEAREST)
    return content_mask(mask.shape, mask, 3) > 0


def _registered_intensities(ir_frame: np.ndarray, vis_frame: np.ndarray,
                            homography: np.ndarray, ir_valid: np.ndarray | None, sigma: float
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible intensities, IR intensities warped by ``homography``, (H_vis, W_vis) bool mask
    of the valid IR content), float32, both frames blurred by ``sigma`` first (0: raw); the
    valid content loses the blur's reach along its border, where the black fill smears in."""
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    if ir_valid is None:
        ir_valid = np.full(ir_frame.shape[:2], 255, np.uint8)
    template, moving = vis_frame.astype(np.float32), ir_frame.astype(np.float32)
    if sigma > 0:
        template = cv2.GaussianBlur(template, (0, 0), sigma)
        moving = cv2.GaussianBlur(moving, (0, 0), sigma)
        ir_valid = content_mask(ir_valid.shape, ir_valid, int(np.ceil(3 * sigma)))
    warped = cv2.warpPerspective(moving, homography, vis_size, flags=cv2.INTER_LINEAR)
    return template, warped, _warped_content(ir_valid, homography, vis_size)


def intensity_correlation(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                          ir_valid: np.ndarray, sigma: float = 0.0) -> float:
    """Correlation coefficient of the intensities of the visible frame and the IR frame
    warped by ``homography`` (IR->visible), both blurred by ``sigma`` (0: raw), over the visible
    pixels with valid IR content. (H_ir, W_ir) and (H_vis, W_vis) uint8 -> float in [-1, 1]."""
    return _correlation(*_registered_intensities(ir_frame, vis_frame, homography, ir_valid,
                                                 sigma))


def intensity_refinement(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                         ir_valid: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """Full-resolution homography ECC on the intensities, from ``homography`` (IR->visible),
    compared at the IR frame's pixels.

    Only for pairs whose intensities correlate (same modality): there the intensity is a smoother
    signal than its gradient, so the optimum is not biased by the resampling of sharp gradient
    peaks. One pass per blur of ``settings.intensity_sigmas``, widest first. The visible frame is
    resampled into the IR frame's pixels, bicubically: bilinear resampling blurs by an amount
    that depends on the sub-pixel phase, which varies across a homography, and that pulls the
    optimum by up to a tenth of a pixel at the corners. Compared at the IR frame's pixels rather
    than the visible frame's (until session 31), the optimum lies nearer the truth: on the
    bench's same-modality pairs, started at the truth, 120 bilinear copies end within 0.041 px
    instead of 0.118 (median 0.010 px), and 120 views rendered like a sensor within 0.028 px
    instead of 0.056 (median 0.007 px; calibration/README.md).
    (H_ir, W_ir) and (H_vis, W_vis) uint8 frames, (H_ir, W_ir) uint8 valid mask -> (3, 3)
    homography (the last converged pass's)."""
    for sigma in settings.intensity_sigmas:
        # The blur is done here rather than inside ECC, which would smear the black fill across
        # the mask border; pixels within its reach (and the bicubic kernel's) are left out.
        template, moving = ir_frame.astype(np.float32), vis_frame.astype(np.float32)
        if sigma > 0:
            template = cv2.GaussianBlur(template, (0, 0), sigma)
            moving = cv2.GaussianBlur(moving, (0, 0), sigma)
        mask = content_mask(ir_valid.shape, ir_valid, int(np.ceil(3 * sigma)) + 4)
        try:
            _, warp = ecc_multichannel(template[..., None], moving[..., None], homography,
                                       template_mask=mask, iterations=settings.final_iterations,
                                       epsilon=settings.final_epsilon,
                                       interpolation=cv2.INTER_CUBIC)
        except (cv2.error, np.linalg.LinAlgError):
            return homography
        homography = normalised(warp)
    return homography


@dataclass
class PairFit:
    """The best-scoring estimate for one frame pair and the evidence for moving to it: (3, 3)
    homography and its model, full-resolution scores of it and of the start, and the
    (tiles,) gains over the start's per-tile scores of its own shifted by ``keep_px`` (Fisher
    z, see ``significantly_better``); ``ambiguous``: see ``ambiguous``; ``uncertainty_px``: see
    ``fine_alignments``."""

    homography: np.ndarray
    model: str
    score: float
    start_score: float
    tile_gains: np.ndarray
    ambiguous: bool = False
    uncertainty_px: float = 0.0  # of the fine stage (``fine_alignments``); 0 where the
    # intensities decide (same modality)
    same_modality: bool = False


def fit_pair(ir_frame: np.ndarray, vis_frame: np.ndarray, initial: np.ndarray,
             ir_valid: np.ndarray, settings: AutoSettings,
             map_tasks: TaskMap = in_this_process) -> PairFit:
    """The best candidate (start, similarity, homography) aligning one (H_ir, W_ir) uint8 IR
    frame to one (H_vis, W_vis) uint8 visible frame from the (3, 3) ``initial`` homography.
    ``map_tasks`` runs the coarse starts and the fine schedules (see ``TaskPool``)."""
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    coarse_options = coarse_candidates(ir_frame, vis_frame, initial, ir_valid, settings,
                                       map_tasks)
    # A coarse runner-up far from the best one is refined too, and the full-resolution scores
    # decide: at 320 px two places can correlate within 10 % of each other when only one of
    # them still fits at full resolution.
    starts = [coarse_options[0][0], *rivals(coarse_options, ir_size, settings)]
    fine_ends = fine_alignments_from(starts, ir_frame, vis_frame, ir_valid, settings, map_tasks)
    ends = sorted(((start, *end) for start, end in zip(starts, fine_ends)),
                  key=lambda end: -end[2])
    coarse, fine, _, uncertainty = ends[0]
    candidates = [("start", initial), ("affine", coarse), ("homography", fine)]
    fine_intensity = intensity_correlation(ir_frame, vis_frame, fine, ir_valid)
    same_modality = fine_intensity > settings.intensity_correlation
    if same_modality:
        def intensity_fit(homography: np.ndarray) -> float:
            return intensity_correlation(ir_frame, vis_frame, homography, ir_valid,
                                         settings.intensity_score_sigma)

        fits = [intensity_fit(initial), intensity_fit(coarse), intensity_fit(fine)]
        refined = intensity_refinement(ir_frame, vis_frame, fine, ir_valid, settings)
        refined_fit = intensity_fit(refined)
        # A pass can run away on a nearly featureless frame: drop it when it fits clearly
        # worse (a small loss is this correlation disagreeing with ECC's).
        if refined_fit >= fits[2] - 0.01:
            candidates[-1], fits[2] = ("homography", refined), refined_fit
    scores = [alignment_score(ir_frame, vis_frame, h, ir_valid, settings.score_sigma)
              for _, h in candidates]
    # Same modality: the intensities are the stronger evidence (gradients of noise, as in
    # smoke or fog, barely correlate after resampling).
    tile_sigma = settings.intensity_score_sigma if same_modality else settings.score_sigma
    per_tile = [fisher_z(tile_scores(ir_frame, vis_frame, h, ir_valid, tile_sigma,
                                     settings.score_tiles, intensity=same_modality))
                for _, h in candidates]
    # Which candidate fits best is judged over the whole frame: on the intensities, tiles of
    # flat sky can favour a candidate 0.4 px off (resampling smooths their noise unequally).
    evidence = fisher_z(np.array(fits if same_modality else scores))
    # The homography is the affine fit refined with more freedom at full resolution: it is
    # kept unless it clearly scores worse (it ran away); near-ties are resampling noise. On
    # gradients, in correlation units: where they correlate about 0.9 (one scene, two
    # polarities) Fisher z would magnify a 0.002 tie to 0.015 and keep a 320 px fit.
    tie_scale = evidence if same_modality else np.array(scores)
    refined = 2 if tie_scale[2] >= tie_scale[1] - settings.refined_tolerance else 1
    best = refined if evidence[refined] > evidence[0] else 0
    # The start has to lose against the best fit even when that is misaligned by
    # ``keep_px``: how much such a misalignment costs depends on the scene (sharp, dense edges
    # lose a lot per pixel, smoke and fog hardly anything), and a smaller correction than
    # that is not what the scores can tell from parallax or noise.
    tolerated = np.mean([fisher_z(tile_scores(
        ir_frame, vis_frame, np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]) @
        candidates[best][1], ir_valid, tile_sigma, settings.score_tiles,
        intensity=same_modality)) for dx, dy in settings.keep_px * np.array(
            [[1, 0], [-1, 0], [0, 1], [0, -1]])], axis=0)
    return PairFit(homography=candidates[best][1], model=candidates[best][0],
                   score=scores[best], start_score=scores[0],
                   tile_gains=tolerated - per_tile[0],
                   ambiguous=ambiguous([(end[1], end[2]) for end in ends], ir_size, settings),
                   uncertainty_px=0.0 if same_modality else uncertainty,
                   same_modality=same_modality)


def without_band(ir_valid: np.ndarray, fraction: float) -> np.ndarray:
    """(H, W) uint8 valid mask with the outer ``fraction`` of the height and width (each side)
    cleared."""
    height, width = ir_valid.shape[:2]
    rows, columns = int(round(fraction * height)), int(round(fraction * width))
    inner = np.zeros_like(ir_valid)
    inner[rows:height - rows, columns:width - columns] = \
        ir_valid[rows:height - rows, columns:width - columns]
    return inner


def variant_optimum(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                    settings: AutoSettings, same_modality: bool,
                    variant: tuple[np.ndarray, float]) -> np.ndarray:
    """The optimum nearest ``homography`` of the objective seeing one ``variant`` of the data,
    (valid mask, blur sigma): the last intensity pass for one modality, else ``settled``."""
    valid, sigma = variant
    if same_modality:
        return intensity_refinement(ir_frame, vis_frame, homography, valid,
                                    replace(settings, intensity_sigmas=(sigma,)))
    return settled(ir_frame, vis_frame, homography, valid, settings, sigma)


def sensitivity(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                ir_valid: np.ndarray, settings: AutoSettings, same_modality: bool,
                map_tasks: TaskMap = in_this_process) -> float:
    """How far ``homography`` (IR->visible) moves when the objective sees slightly other data:
    the largest mean corner distance (IR image corners, visible pixels) from it of the optimum
    it settles to with the usual objective, with the features blurred by each of
    ``sensitivity_sigmas``, and with the outer ``sensitivity_band`` of the IR frame left out.
    Same modality: the last intensity pass, as is, with ``intensity_sensitivity_sigma`` blur
    and with the band left out. A scene with sharp shared outlines pins its optimum (on the
    bench a median 0.011 px for one modality, tenths of a pixel across two); a weak one lets it
    wander by pixels, and so may the fit.
    (H_ir, W_ir) and (H_vis, W_vis) uint8 frames, (H_ir, W_ir) uint8 valid mask -> pixels.
    ``map_tasks`` runs the variants (see ``TaskPool``)."""
    ir_size = (ir_frame.shape[1], ir_frame.shape[0])
    inner = without_band(ir_valid, settings.sensitivity_band)
    if same_modality:
        last_sigma = settings.intensity_sigmas[-1]
        variants = [(ir_valid, last_sigma), (ir_valid, settings.intensity_sensitivity_sigma),
                    (inner, last_sigma)]
    else:
        variants = [(ir_valid, settings.score_sigma), (inner, settings.score_sigma),
                    *((ir_valid, sigma) for sigma in settings.sensitivity_sigmas)]
    moved = map_tasks(partial(variant_optimum, ir_frame, vis_frame, homography, settings,
                              same_modality), variants)
    return max(corner_error(other, homography, ir_size) for other in moved)


def local_agreement(ir_frame: np.ndarray, vis_frame: np.ndarray, homography: np.ndarray,
                    ir_valid: np.ndarray, settings: AutoSettings) -> tuple[int, int]:
    """How many patches of the registered pair support ``homography`` (IR->visible), checked
    one patch at a time, independently of the global fit.

    The IR frame is warped onto the visible one and both become orientation features (1.5 px
    blur); a grid of ``agreement_grid`` x ``agreement_grid`` square patches of the warped IR
    features is matched by translation within +-``agreement_search`` px (normalised
    cross-correlation). A patch counts when it lies in valid IR content and has structure (mean
    feature weight >= 0.25); it agrees when its best shift is at most ``agreement_px`` long, at
    a correlation above 0.15. By chance, about one patch in ten would. (H_ir, W_ir) and
    (H_vis, W_vis) uint8 frames, (H_ir, W_ir) uint8 valid mask -> (structured, agreeing)."""
    vis_size = (vis_frame.shape[1], vis_frame.shape[0])
    warped = cv2.warpPerspective(ir_frame, homography, vis_size, flags=cv2.INTER_LINEAR)
    content = cv2.warpPerspective(ir_valid, homography, vis_size, flags=cv2.INTER_NEAREST)
    ir_features, _ = orientation_features(warped, 1.5, content)
    vis_features, _ = orientation_features(vis_frame, 1.5)
    height, width = vis_frame.shape[:2]
    search, grid = settings.agreement_search, settings.agreement_grid
    half = max(8, min(height, width) // (2 * grid))
    if min(height, width) < 2 * (half + search) + 1:
        return 0, 0
    structured = agreeing = 0
    for y in np.linspace(half + search, height - half - search - 1, grid).astype(int):
        for x in np.linspace(half + search, width - half - search - 1, grid).astype(int):
            if (content[y - half:y + half, x - half:x + half] == 0).any():
                continue
            patch = np.ascontiguousarray(ir_features[y - half:y + half, x - half:x + half])
            if np.linalg.norm(patch, axis=2).mean() < 0.25:
                continue
            structured += 1
            area = np.ascontiguousarray(vis_features[y - half - search:y + half + search,
                                                     x - half - search:x + half + search])
            scores = cv2.matchTemplate(area, patch, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (best_x, best_y) = cv2.minMaxLoc(scores)
            if peak > 0.15 and np.hypot(best_x - search, best_y - search) <= \
                    settings.agreement_px:
                agreeing += 1
    return structured, agreeing


def all_pairs(count: int) -> str:
    """'the frame pair' or 'all 5 frame pairs', for messages about every pair given."""
    return "the frame pair" if count == 1 else f"all {count} frame pairs"


def is_blank(frame: np.ndarray) -> bool:
    """Whether an 8-bit frame is one uniform gray (within one level): nothing to align."""
    return int(frame.max()) - int(frame.min()) <= 1


def _fit_job(job: tuple) -> PairFit:
    return fit_pair(*job)


def fit_pairs(jobs: list[tuple], pool: TaskPool, progress: Callable[[], object] | None = None
              ) -> list[PairFit]:
    """``fit_pair(*job)`` for each job ``(ir_frame, vis_frame, initial, ir_valid, settings)``,
    in order, each in one of ``pool``'s processes; a single pair's fine schedules are spread
    over them instead. ``progress`` runs as each pair ends."""
    if len(jobs) == 1:
        fits = [fit_pair(*jobs[0], map_tasks=pool.map)]
        if progress is not None:
            progress()
        return fits
    fits: list[PairFit | None] = [None] * len(jobs)
    for index, fit in pool.as_completed(_fit_job, jobs):
        fits[index] = fit
        if progress is not None:
            progress()
    return fits


def processes_to_start(workers: int, pairs: int, settings: AutoSettings) -> int:
    """At most ``workers``, and no more than can be busy at once: one per frame pair, or for a
    single pair its largest set of independent tasks (the fine schedules of a start and of a
    rival start, or the sensitivity's variants)."""
    tasks = pairs if pairs > 1 else max(2 * len(settings.fine_schedules),
                                        2 + len(settings.sensitivity_sigmas))
    return max(1, min(workers, tasks))


def register_frames(ir_frames: list[np.ndarray], vis_frames: list[np.ndarray],
                    initial: np.ndarray | None = None,
                    ir_valid: list[np.ndarray] | None = None,
                    settings: AutoSettings | None = None, progress=None,
                    workers: int = 1) -> AutoResult:
    """One IR->visible homography from one or more frame pairs of a fixed camera pair.

    ``ir_frames``: (H_ir, W_ir) uint8 each; ``vis_frames``: (H_vis, W_vis) uint8 each;
    ``initial``: a starting (3, 3) homography (default: stretch the IR frame over the visible
    one); ``ir_valid``: optional (H_ir, W_ir) masks of IR pixels with real content;
    ``progress``: optional callable run after each frame pair; ``workers``: processes fitting
    frame pairs at once, or a single pair's independent stages (``fit_pairs``, ``TaskPool``;
    the result is the same). Judge the result with
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
    fit_size = working_size(ir_size, vis_size, settings)
    if fit_size == vis_size:
        return _register(ir_frames, vis_frames, initial, ir_valid, settings, progress, workers)
    to_fit = pixel_scaling(vis_size, fit_size)
    reduced = _register(ir_frames, [resize_area(frame, fit_size) for frame in vis_frames],
                        to_fit @ initial, ir_valid, settings, progress, workers)
    return in_visible_pixels(reduced, to_fit, fit_size)


def _register(ir_frames: list[np.ndarray], vis_frames: list[np.ndarray], initial: np.ndarray,
              ir_valid: list[np.ndarray] | None, settings: AutoSettings, progress, workers: int
              ) -> AutoResult:
    """``register_frames`` at the visible frames' own size."""
    if ir_valid is None:
        ir_valid = [np.full(frame.shape[:2], 255, np.uint8) for frame in ir_frames]
    ir_valid = [(np.asarray(mask) > 0).astype(np.uint8) * 255 for mask in ir_valid]
    # A uniform frame (lens cap, a camera still starting) has no edge to align: its pair is
    # left out.
    fitted = [index for index, (ir, vis) in enumerate(zip(ir_frames, vis_frames))
              if not (is_blank(ir) or is_blank(vis))]
    if progress is not None:
        for _ in range(len(ir_frames) - len(fitted)):
            progress()
    jobs = [(ir_frames[index], vis_frames[index], initial, ir_valid[index], settings)
            for index in fitted]
    if not jobs:
        raise StreamFuseError(
            f"automatic registration is impossible: in {all_pairs(len(ir_frames))} the IR or "
            "the visible frame is blank (one uniform gray): no file written; use frames in which "
            "both cameras see the scene")
    with TaskPool(processes_to_start(workers, len(jobs), settings)) as pool:
        return combine_fits(jobs, fit_pairs(jobs, pool, progress), pool.map)


def working_size(ir_size: tuple[int, int], vis_size: tuple[int, int], settings: AutoSettings
                 ) -> tuple[int, int]:
    """(width, height) at which the visible frames are fitted: their own size, or reduced so
    that the IR frame stretched over them is upsampled at most ``max_ir_upsampling`` times
    (linear, by area: frames of other shapes count alike)."""
    upsampling = np.sqrt(vis_size[0] * vis_size[1] / (ir_size[0] * ir_size[1]))
    factor = settings.max_ir_upsampling / upsampling
    if factor >= 1.0:
        return vis_size
    return (max(8, round(vis_size[0] * factor)), max(8, round(vis_size[1] * factor)))


def in_visible_pixels(result: AutoResult, to_fit: np.ndarray, fit_size: tuple[int, int]
                      ) -> AutoResult:
    """``result`` of a fit to the visible frames reduced by ``to_fit`` (full visible pixels
    -> ``fit_size`` pixels), its homographies and distances in full visible pixels."""
    from_fit = np.linalg.inv(to_fit)
    pixel = 1.0 / float(np.sqrt(abs(np.linalg.det(to_fit[:2, :2]))))
    return replace(result, homography=normalised(from_fit @ result.homography),
                   per_frame=[normalised(from_fit @ h) for h in result.per_frame],
                   spread_px=result.spread_px * pixel,
                   uncertainty_px=result.uncertainty_px * pixel,
                   sensitivity_px=result.sensitivity_px * pixel,
                   fit_size=fit_size, fit_pixel_px=pixel)


def combine_fits(jobs: list[tuple], fits: list[PairFit], map_tasks: TaskMap = in_this_process
                 ) -> AutoResult:
    """The :class:`AutoResult` of the frame pairs ``jobs`` (``fit_pair``'s arguments, one
    camera pair) from their ``fits``; ``map_tasks`` runs a single pair's sensitivity."""
    _, _, initial, _, settings = jobs[0]
    ir_size = (jobs[0][0].shape[1], jobs[0][0].shape[0])
    start_confidence = float(np.median([fit.start_score for fit in fits]))
    # Frames whose scene matches at several places say nothing about which one is right.
    clear = [fit for fit in fits if not fit.ambiguous]
    ambiguous_frames = len(fits) - len(clear)
    used = [job for job, fit in zip(jobs, fits) if not fit.ambiguous]
    same_modality = [fit.same_modality for fit in fits if not fit.ambiguous]

    def patches_supporting(homography: np.ndarray) -> tuple[int, int]:
        counts = [local_agreement(ir_frame, vis_frame, homography, ir_valid, settings)
                  for ir_frame, vis_frame, _, ir_valid, _ in used]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def sensitivity_of_one_frame(homography: np.ndarray) -> float:
        # Several frames measure their residual by their disagreement.
        if len(used) != 1 or not settings.measure_sensitivity:
            return 0.0
        ir_frame, vis_frame, _, ir_valid, _ = used[0]
        return sensitivity(ir_frame, vis_frame, homography, ir_valid, settings,
                           same_modality[0], map_tasks)

    # A start that scores below the refusal floor is no alignment to keep: the significance
    # test only protects one that could itself be written.
    start_writable = start_confidence >= settings.min_confidence
    if not clear or (start_writable and not significantly_better(
            np.concatenate([fit.tile_gains for fit in clear]), settings)):
        structured, agreeing = patches_supporting(initial)
        return AutoResult(homography=normalised(initial), confidence=start_confidence,
                          spread_px=0.0, frames_used=len(clear),
                          per_frame=[initial] * len(clear), start_confidence=start_confidence,
                          model="start", ambiguous_frames=ambiguous_frames,
                          structured_patches=structured, agreeing_patches=agreeing,
                          sensitivity_px=sensitivity_of_one_frame(initial))
    fits = clear
    estimates = [fit.homography for fit in fits]
    if len(estimates) == 1:
        combined, spread = estimates[0], 0.0
    else:
        combined, spread = combine_estimates(estimates, ir_size)
    models = [fit.model for fit in fits]
    structured, agreeing = patches_supporting(combined)
    return AutoResult(
        homography=combined,
        confidence=float(np.median([fit.score for fit in fits])),
        spread_px=spread,
        frames_used=len(estimates),
        per_frame=estimates,
        start_confidence=start_confidence,
        model=max(set(models), key=models.count),
        ambiguous_frames=ambiguous_frames,
        # The median of n frames' estimates wanders about 1/sqrt(n) as far as one does.
        uncertainty_px=float(np.median([fit.uncertainty_px for fit in fits])) / np.sqrt(
            len(fits)),
        structured_patches=structured,
        agreeing_patches=agreeing,
        sensitivity_px=sensitivity_of_one_frame(combined),
    )


def combine_estimates(homographies: list[np.ndarray], ir_size: tuple[int, int]
                      ) -> tuple[np.ndarray, float]:
    """Robust average of several IR->visible homographies: the median position of each IR image
    corner, refitted exactly. Returns (homography, spread_px), spread_px being the median
    over frames of the mean corner distance from the combined estimate."""
    corners = image_corners(ir_size)
    placed = np.stack([transform_points(h, corners) for h in homographies])  # (N, 4, 2)
    median_corners = np.median(placed, axis=0)
    combined, _ = cv2.findHomography(corners, median_corners, 0)
    distances = np.linalg.norm(placed - median_corners, axis=2).mean(axis=1)
    return normalised(combined), float(np.median(distances))


def residual_warning(result: AutoResult, settings: AutoSettings | None = None) -> str | None:
    """One line for a result that passes :func:`check_reliable` but whose residual says the
    scene may not pin the fit to ``warn_residual_px``; None otherwise."""
    settings = settings or AutoSettings()
    limit_px = settings.warn_residual_px * result.fit_pixel_px
    if result.residual_px <= limit_px:
        return None
    return (f"this fit may be more than {limit_px:.3g} px off (residual "
            f"{result.residual_px:.1f} px: {result.residual_basis})")


def check_reliable(result: AutoResult, settings: AutoSettings | None = None) -> None:
    """Raise a one-line StreamFuseError when ``result`` should not be written as a calibration."""
    settings = settings or AutoSettings()
    advice = "no file written; use --points or --board, or frames of a scene with more structure"
    pixel = result.fit_pixel_px  # thresholds hold in the pixels the fit was made at
    if result.frames_used == 0:
        raise StreamFuseError(
            f"automatic registration is unreliable: the scene matches about equally well at "
            f"several places in all {result.ambiguous_frames} frame pairs: {advice}")
    if result.confidence < settings.min_confidence:
        raise StreamFuseError(
            f"automatic registration is unreliable: edge-orientation correlation "
            f"{result.confidence:.2f} < {settings.min_confidence} (blank, featureless or "
            f"unrelated frames?): {advice}")
    if result.agreement < settings.min_agreement:
        raise StreamFuseError(
            f"automatic registration is unreliable: only {result.agreeing_patches} of "
            f"{result.structured_patches} structured patches of the registered pair agree with "
            f"it within {settings.agreement_px * pixel:.3g} px (< {settings.min_agreement:.0%}; "
            f"do both cameras see the same scene at the same moment?): {advice}")
    if result.uncertainty_px > settings.max_uncertainty_px * pixel:
        raise StreamFuseError(
            f"automatic registration is unreliable: equally good fits lie "
            f"{result.uncertainty_px:.1f} px apart (> {settings.max_uncertainty_px * pixel:.3g} "
            f"px; the scene does not pin the alignment down): {advice}")
    if result.spread_px > settings.max_spread_px * pixel:
        raise StreamFuseError(
            f"automatic registration is unreliable: the {result.frames_used} frame pairs "
            f"disagree by {result.spread_px:.1f} px (> {settings.max_spread_px * pixel:.3g}): "
            f"{advice}")
