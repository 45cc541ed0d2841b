"""Evaluation metrics on world-frame joint positions (metres, Y-up, 30 fps), spec section 5.

Plain functions (one clip as a tensor, or a list of clips that are pooled) and ``torchmetrics.Metric`` classes
(float64 sum states, DDP-safe) for: Fréchet distance per frame and over 30-frame windows, sample diversity,
MPJPE / MPJVE with best-of-k curves, inter-person correlation, foot sliding and capsule penetration. The caller
does the forward kinematics; :func:`position_features` / :func:`velocity_features` turn joints into the
reference ``g`` (positions, 63-d for the 21 body joints) and ``k`` (velocities x fps) features.

Functions whose reference behaviour is a bug take ``mode="reference" | "fixed"`` (default ``"fixed"``);
:data:`REFERENCE_DIFFERENCES` lists every difference.
"""

from magnet.metrics._utils import MODES, Mode
from magnet.metrics.capsules import (
    CAPSULES,
    IGNORED_CAPSULE_PAIRS,
    Capsule,
    penetration,
    penetration_from_sums,
    penetration_sums,
    segment_distance,
)
from magnet.metrics.fd import (
    FD_EPS,
    FD_STRIDE,
    FD_WINDOW,
    feature_moments,
    frechet_distance,
    frechet_distance_from_moments,
    frechet_distance_gaussian,
    gaussian_from_moments,
    window_features,
    windowed_frechet_distance,
)
from magnet.metrics.foot_skating import (
    FIXED_CONTACT_HEIGHT,
    FOOT_INDICES,
    REFERENCE_CONTACT_HEIGHT,
    SLIDE_SPEED,
    foot_sliding,
)
from magnet.metrics.modules import (
    MPJPE,
    MPJVE,
    FootSliding,
    FrechetDistance,
    MeanJointError,
    Penetration,
    PersonCorrelation,
    SampleDiversity,
    WindowedFrechetDistance,
)
from magnet.metrics.motion import (
    clip_diversity,
    joint_errors,
    mpjpe,
    mpjve,
    person_correlation,
    position_features,
    sample_diversity,
    sample_diversity_seq,
    velocity_features,
)

# Every place where mode="fixed" (the default) differs from mode="reference" (the original eval.py), plus the
# differences that have no switch. Keys are the function names; the lead copies this into the README.
REFERENCE_DIFFERENCES: dict[str, str] = {
    "mpjpe / mpjve (MPJPE, MPJVE)":
        "Same aggregation in both modes (mean over all errors of all clips pooled, so longer clips weigh more; "
        "best-of-k = per-clip running minimum over samples of the per-sample mean, averaged over clips). "
        "reference: metres (m/s); fixed: millimetres (mm/s). `unit=` overrides; keys carry the unit "
        "(mpjpe_mm, mpjpe_best_list_mm, mpjve_mm_per_s, ...).",
    "foot_sliding (FootSliding)":
        "reference: contact = y < -0.01 m at t and t+1 (below where planted feet sit, ~+0.01 m); ratio "
        "denominator S*T*P frames although only T-1 transitions are counted; mean sliding speed NaN when nothing "
        "slides. fixed: contact = y < floor + 0.05 m (floor=0 by default); denominator S*(T-1)*P transitions; "
        "mean speed 0.0 when nothing slides. Keys: foot_sliding_ratio, avg_foot_sliding_vel_m_per_s, "
        "sliding_frames, total_frames (= the denominator used).",
    "person_correlation (PersonCorrelation)":
        "reference: a dim with zero variance makes its pair NaN (torchmetrics PearsonCorrCoef) and the NaN "
        "propagates; a person whose whole feature block is constant gives 0.0 for its pairs. fixed: dims "
        "with zero variance (<= 1e-12 x mean square) for either person are skipped, pairs with no usable dim "
        "are skipped, None (function) / NaN (Metric) when nothing is left. Both: None when P = 1.",
    "penetration (Penetration)":
        "reference: every 10th row when there are more than 10^6 rows. fixed: all rows (chunked). The Metric "
        "always uses all rows. Segment distances are exact in both (the reference snaps |s|,|t| numerators "
        "below 1e-8 to 0, a negligible difference).",
    "sample_diversity_seq":
        "Clips shorter than one second are skipped; reference still counts them in the average's denominator, "
        "fixed does not.",
    "sample_diversity (no switch)":
        "Uses the real feature dim D; the reference hard-codes 63 (identical for the 63-d body features).",
    "frechet_distance / windowed_frechet_distance (no switch)":
        "Identical formula (float64, unbiased covariance, eps 1e-6 regulariser, eigenvalue square roots clamped "
        "at 0; windows 30/10, /30, short clips skipped). Statistics come from running sums, not one big "
        "concatenated matrix, so they can be accumulated and summed across DDP ranks.",
}

__all__ = [
    "CAPSULES",
    "FD_EPS",
    "FD_STRIDE",
    "FD_WINDOW",
    "FIXED_CONTACT_HEIGHT",
    "FOOT_INDICES",
    "IGNORED_CAPSULE_PAIRS",
    "MODES",
    "MPJPE",
    "MPJVE",
    "REFERENCE_CONTACT_HEIGHT",
    "REFERENCE_DIFFERENCES",
    "SLIDE_SPEED",
    "Capsule",
    "FootSliding",
    "FrechetDistance",
    "MeanJointError",
    "Mode",
    "Penetration",
    "PersonCorrelation",
    "SampleDiversity",
    "WindowedFrechetDistance",
    "clip_diversity",
    "feature_moments",
    "foot_sliding",
    "frechet_distance",
    "frechet_distance_from_moments",
    "frechet_distance_gaussian",
    "gaussian_from_moments",
    "joint_errors",
    "mpjpe",
    "mpjve",
    "penetration",
    "penetration_from_sums",
    "penetration_sums",
    "person_correlation",
    "position_features",
    "sample_diversity",
    "sample_diversity_seq",
    "segment_distance",
    "velocity_features",
    "window_features",
    "windowed_frechet_distance",
]
