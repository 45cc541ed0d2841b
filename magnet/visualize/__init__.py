"""Seeing generated motion: skeleton videos (:mod:`magnet.visualize.render`) and an interactive 3D viewer
(:mod:`magnet.visualize.view`, needs viser: the ``viewer`` extra).

The names below are imported on first use, so ``python -m magnet.visualize.render`` runs its module only once.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SkeletonRenderer": "magnet.visualize.render",
    "render_clip": "magnet.visualize.render",
    "render_outputs": "magnet.visualize.render",
    "render_panels": "magnet.visualize.render",
    "write_video": "magnet.visualize.render",
    "MotionViewer": "magnet.visualize.view",
}

__all__ = ["MotionViewer", "SkeletonRenderer", "render_clip", "render_outputs", "render_panels", "write_video"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'magnet.visualize' has no attribute {name!r}")
