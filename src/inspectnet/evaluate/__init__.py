"""Evaluation: metrics, thresholds, plots, the HTML report. Called, this package is
``run.evaluate`` (``from inspectnet import evaluate``)."""

from .._api import callable_package

callable_package(__name__, f"{__name__}.run", "evaluate")
