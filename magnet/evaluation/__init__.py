"""Evaluation of generated motion (spec 5): output npz IO, FK features, metrics over a run directory, reports.

* :mod:`magnet.evaluation.io`: ``load_output_npz`` / ``write_output_npz`` (one clip per npz, row 0 = GT),
  ``inf_cfg.yaml`` reading (OmegaConf path tags included), the known sampling tasks, the list of files to evaluate.
* :mod:`magnet.evaluation.features`: frame selection and forward kinematics -> joint positions (float64).
* :mod:`magnet.evaluation.run`: ``evaluate_directory`` -> ``eval_dict_c{suffix}.yaml`` / ``.csv`` and
  ``eval_summary{suffix}.md``.
* :mod:`magnet.evaluation.make_example`: GT + perturbed copies of held-out clips in the output format.
"""

from magnet.evaluation.features import (
    ClipFeatures,
    FrameSelection,
    clip_features,
    forward_joints,
    select_frames,
)
from magnet.evaluation.io import (
    INF_CFG_NAME,
    SAMPLING_TASKS,
    ClipOutput,
    InferenceConfig,
    check_task,
    list_output_files,
    load_output_npz,
    load_yaml,
    read_inference_config,
    write_inference_config,
    write_output_npz,
)
from magnet.evaluation.report import summary_markdown
from magnet.evaluation.run import (
    CONDITIONED_TASKS,
    EvaluationResult,
    evaluate_directory,
    output_suffix,
    resolve_body_model,
    to_csv_lines,
)

__all__ = [
    "CONDITIONED_TASKS",
    "INF_CFG_NAME",
    "SAMPLING_TASKS",
    "ClipFeatures",
    "ClipOutput",
    "EvaluationResult",
    "FrameSelection",
    "InferenceConfig",
    "check_task",
    "clip_features",
    "evaluate_directory",
    "forward_joints",
    "list_output_files",
    "load_output_npz",
    "load_yaml",
    "output_suffix",
    "read_inference_config",
    "resolve_body_model",
    "select_frames",
    "summary_markdown",
    "to_csv_lines",
    "write_inference_config",
    "write_output_npz",
]
