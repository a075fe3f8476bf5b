"""One entry point for every model: ``create_model(name, num_classes, pretrained=...)``.

Our own builders register with :func:`register_model`; any other name is looked up in
timm, so every timm architecture works (random init offline, or weights from a file).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as nn

from ..errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of inspectnet needs to know about a model before building it."""

    name: str
    default_img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained_source: str | None  # where bundled ImageNet weights come from, if any
    description: str = ""


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}

# The lecture's pretrained examples: resolved to timm's architectures.
ALIASES = {
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "resnet50": "resnet50",
    "inception_v3": "inception_v3",
    "xception": "legacy_xception",
}


def register_model(info: ModelInfo) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a builder ``fn(num_classes, pretrained, **kw) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[info.name] = fn
        _INFO[info.name] = info
        return fn

    return deco


def canonical_name(name: str) -> str:
    n = name.strip()
    if n in _BUILDERS:
        return n
    alt = n.replace("_", "-")
    if alt in _BUILDERS:
        return alt
    return ALIASES.get(n, n)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def list_models(pattern: str = "*", include_timm: bool = False) -> list[str]:
    """Registered names (and timm's, when asked) that match a glob pattern."""
    names = sorted(_BUILDERS)
    if include_timm:
        names += [n for n in _timm_names() if n not in _BUILDERS]
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    """Defaults of a model (input size, normalisation); timm's pretrained config otherwise."""
    n = canonical_name(name)
    if n in _INFO:
        return _INFO[n]
    import timm

    if n not in _timm_names():
        close = [m for m in list_models(f"*{n[:4]}*", include_timm=True)][:8]
        raise ModelError(
            f"unknown model {name!r}; inspectnet's own: {', '.join(list_models())}"
            + (f"; similar timm names: {', '.join(close)}" if close else "")
            + " (see `inspectnet models --all`)"
        )
    cfg = timm.get_pretrained_cfg(n) if hasattr(timm, "get_pretrained_cfg") else None
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    return ModelInfo(n, size, mean, std, None, "timm architecture")  # type: ignore[arg-type]
