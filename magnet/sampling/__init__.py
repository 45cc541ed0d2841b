"""Generation with a trained DFoT (reference spec 4): plans, the sampler, tasks, guidance, post-processing.

``Sampler.from_checkpoint(path).generate(task=..., context=clip)`` is the Python API; ``sample.py`` samples whole
dataset splits into the reference's output format (:mod:`magnet.sampling.run`). Plans (which level every token
has at every network call) are plain data: :mod:`magnet.sampling.plans`.
"""

from magnet.sampling.config import TASK_DEFAULTS, TASKS, SamplingConfig
from magnet.sampling.plans import Plan
from magnet.sampling.sampler import Sampler, Samples

__all__ = ["TASKS", "TASK_DEFAULTS", "Plan", "Sampler", "Samples", "SamplingConfig"]
