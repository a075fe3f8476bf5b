"""Training: ``run.py`` is the pipeline, ``approach.py`` the contract and registry, and
``approaches/`` holds one file per approach. Called, this package is ``run.train``."""

from .._api import callable_package

callable_package(__name__, f"{__name__}.run", "train")
