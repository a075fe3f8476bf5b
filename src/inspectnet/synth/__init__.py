"""Synthetic photos of cutting-tool inserts (intact / damaged / empty) on an inspection tray.

Procedurally rendered top views of ISO 1832 indexable inserts (C, D, S, T, V, W, R) with
coatings, chip-breakers and clamping holes, under random pose, light, tray, clutter and
camera effects; damaged inserts carry chipping, a broken corner, flank or crater wear, a crack
or built-up edge, with a pixel mask of the damage.  Pure numpy + Pillow + OpenCV.

Example:
    >>> from inspectnet.synth import generate
    >>> generate("data/synth", n=1200, seed=0, difficulty="medium")  # doctest: +SKIP
"""

from inspectnet.synth.config import (
    COATINGS,
    DAMAGE_MODES,
    DIFFICULTIES,
    SHAPES,
    SynthArgumentError,
    SynthConfig,
)
from inspectnet.synth.dataset import MANIFEST_COLUMNS, class_counts, generate
from inspectnet.synth.render import render_sample

__all__ = [
    "COATINGS",
    "DAMAGE_MODES",
    "DIFFICULTIES",
    "MANIFEST_COLUMNS",
    "SHAPES",
    "SynthArgumentError",
    "SynthConfig",
    "class_counts",
    "generate",
    "render_sample",
]
