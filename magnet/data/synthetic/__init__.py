"""Procedural multi-person interaction generator: the embedded default dataset.

Every model trains on this data on a fresh machine without licensed motion capture (``make demo``), so the
motion has real, learnable and checkable structure:

* **Gait with planted feet.** Footsteps are planned along each person's (curved) path; a planted foot keeps its
  world position (its foot joint is the pivot, the heel lifts before toe-off), the swing foot moves on an arc,
  the pelvis follows the smoothed mid-point of the feet with a small vertical bob and lateral sway, and
  hip/knee/ankle come from an analytic two-bone IK that uses the bone lengths of the person's own skeleton
  (``BodyModel.rest_joints(betas)``), so forward kinematics puts the foot joints exactly where they were
  planned. The arms swing opposite to the legs. Speed 0.6-1.6 m/s, cadence and step length follow the speed.
* **Idle standing**: feet planted, breathing, slight sway and head drift.
* **Scenarios** (:data:`SCENARIOS`): ``mirror`` (B is the mirror image of A, left/right swapped),
  ``lead_follow`` (B walks A's path about 1.5 m behind; some clips are a solo walk), ``turn_taking``
  (speaker/listener roles alternate every 2-4 s), ``approach_greet`` (walk towards each other from 4-6 m,
  stop at about 1 m, wave), ``circle_dance`` (2-4 persons evenly spaced on a circle, stepping round it together).

The parts, each readable on its own:

* :mod:`.plan`: constants, numpy helpers and the per-person :class:`~.plan.Plan` (motion parameters, footsteps);
* :mod:`.scenarios`: the gestures and the five scenarios, which write plans;
* :mod:`.gait`: footstep planning along a path and the feet / pelvis tracks;
* :mod:`.ik`: the skeleton, the two-bone leg IK and the whole-body pose;
* :mod:`.generate`: one clip (:func:`generate_sequence`);
* :mod:`.dataset`: the cached dataset (:func:`ensure_synthetic_dataset`) and ``python -m magnet.data.synthetic``.

Conventions: 30 fps, metres, Y-up, the floor at y = 0, a person faces +z in its own frame and the pelvis x axis is
the body's left (SMPL-X). A heading ``yaw`` means the forward direction ``(sin yaw, 0, cos yaw)``.
Output is a :class:`magnet.data.raw.RawSequence` (axis-angle SMPL-X parameters, ``transl`` = world pelvis minus
the rest pelvis). :func:`ensure_synthetic_dataset` turns the clips into a cached dataset through
:func:`magnet.data.preprocess.build_dataset`.
"""

from magnet.data.synthetic.dataset import (
    DATASET_NAME,
    DEFAULT_NUM_CLIPS,
    clip_plan,
    ensure_synthetic_dataset,
    main,
)
from magnet.data.synthetic.generate import DEFAULT_FRAMES, GENERATOR_VERSION, generate_sequence, to_axis_angle
from magnet.data.synthetic.ik import TOE_HEIGHT
from magnet.data.synthetic.plan import FPS
from magnet.data.synthetic.scenarios import PERSON_COUNTS, SCENARIOS

__all__ = [
    "DATASET_NAME",
    "DEFAULT_FRAMES",
    "DEFAULT_NUM_CLIPS",
    "FPS",
    "GENERATOR_VERSION",
    "PERSON_COUNTS",
    "SCENARIOS",
    "TOE_HEIGHT",
    "clip_plan",
    "ensure_synthetic_dataset",
    "generate_sequence",
    "main",
    "to_axis_angle",
]
