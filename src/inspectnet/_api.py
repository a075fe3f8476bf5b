"""Subpackages that are also the facade's functions: ``inspectnet.train``, ``.evaluate``
and ``.predict`` are folders of modules *and*, called, ``train()``, ``evaluate()`` and
``predict()``.

Python binds a subpackage to its parent's attribute of the same name as soon as anything
imports it, so a plain lazy ``inspectnet.train`` function would be replaced by the module
the first time, say, the CLI imported ``inspectnet.train.run``: ``from inspectnet import
train`` would then hand out a module. Making the package itself callable keeps one answer
whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    _target: tuple[str, str]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, name = self._target
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def callable_package(package: str, module: str, name: str) -> None:
    """Make ``package`` (already in ``sys.modules``) call ``module.name`` when called."""
    mod = sys.modules[package]
    mod.__class__ = _CallablePackage
    mod._target = (module, name)  # type: ignore[attr-defined]
