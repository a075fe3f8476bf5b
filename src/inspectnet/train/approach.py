"""The Approach contract and its registry: one file per approach under ``approaches/``.

An approach is everything that differs between ways of training: its defaults, resolved
before training so that ``config.yaml`` records what ran, and ``fit``, which turns the
shared :class:`Context` (split, decoded images, a fresh network) into a :class:`Fitted`
model. The pipeline around it (``run.py``: sources, split, cache, evaluation, bundle,
report) is the same for all of them. A new approach is one new file in ``approaches/``
with ``@register_approach`` on its class; the CLI, the config check, ``compare`` and the
README table read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:  # the contract's types; importing them here would load torch for the CLI's help
    import numpy as np
    import torch

    from ..config import TrainConfig
    from ..data.cache import CachedImages
    from ..data.sources import Sample
    from ..models import ModelInfo, Network
    from .interrupt import Interrupts


@dataclass
class Live:
    """What ``train()`` needs to report or clean up when it is interrupted."""

    interrupts: Interrupts | None = None
    run_dir: Path | None = None
    ckpt: Path | None = None  # the checkpoint of the stage in progress
    spill: Path | None = None  # the decoded-image memmap file, removed at the end


@dataclass
class Context:
    """What the pipeline's stages share: the resolved config, the data and the network."""

    cfg: TrainConfig
    run_dir: Path
    samples: list[Sample]
    classes: list[str]
    positive: str
    info: ModelInfo
    device: torch.device
    approach: Approach
    live: Live
    auto_pool: bool = False  # the user left ``pool`` to the approach (finetune then weighs features)
    quiet: bool = False
    resume: bool = False
    rank0: bool = True  # the process that owns the run folder (see interrupt.is_rank_zero)
    cache: dict[str, CachedImages] = field(default_factory=dict)
    network: Network | None = None
    class_weights: torch.Tensor | None = None

    def say(self, msg: str) -> None:
        """One line to stderr, unless quiet (other DDP ranks are quiet)."""
        if not self.quiet:
            from rich.console import Console

            Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 140).print(msg)

    def save_config(self) -> None:
        """Record the config as resolved so far (rank 0 writes, the others do not)."""
        if self.rank0:
            self.cfg.save(self.run_dir / "config.yaml")

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class Fitted:
    """What ``Approach.fit`` hands back to the pipeline."""

    network: Network
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params_trainable: int = 0
    fallback: str | None = None  # what the approach kept instead of its own result, and why
    val_probs: np.ndarray | None = None  # validation probabilities over the scored views, if known
    # Labels of ``val_probs`` when they are not the val split's: out-of-fold predictions of a
    # cross-validated head cover train+val. The threshold is chosen on them.
    val_labels: np.ndarray | None = None
    val_name: str = "val"  # how ``validation`` in metrics.json was measured


class Approach(ABC):
    """One way of training a classifier.

    Attributes:
        name: The ``--approach`` value.
        description: One line for ``--help``, the README and ``compare``.
        distributed: Whether it can run as a DDP job (several processes).
        default_model: The ``--model`` it trains when none is given.
        compare_model: The model ``compare`` trains it with, or None for ``compare``'s
            ``--model`` (the pretrained backbone).
        needs_all_classes: Whether every class must have training images (and reach every
            split). False for ``anomaly``, which trains on intact images alone; the split
            and data checks then leave the other classes to :meth:`classes`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    distributed: ClassVar[bool] = True
    default_model: ClassVar[str] = "efficientnet_lite0"
    compare_model: ClassVar[str | None] = None
    needs_all_classes: ClassVar[bool] = True

    @abstractmethod
    def defaults(self, cfg: TrainConfig, info: ModelInfo) -> dict[str, Any]:
        """This approach's value of every option the user left unset (``None`` or ``auto``).

        The pipeline applies them only where the config is still unset, before training.
        """

    def classes(self, samples: list[Sample], cfg: TrainConfig) -> list[str]:
        """The class names the model outputs, in index order (default: the labels found).

        Raises:
            DataError: the data cannot train this approach.
        """
        return sorted({s.label for s in samples})

    @abstractmethod
    def fit(self, ctx: Context) -> Fitted:
        """Train ``ctx.network`` on ``ctx.cache`` (``train``, and ``val`` when present)."""


_APPROACHES: dict[str, Approach] = {}
_loaded = False


def register_approach(cls: type[Approach]) -> type[Approach]:
    """Class decorator: make an approach available by its ``name``."""
    if not getattr(cls, "name", "") or not getattr(cls, "description", ""):
        raise TypeError(f"{cls.__name__} needs a name and a one-line description to be registered")
    _APPROACHES[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    # Every module in approaches/ registers itself on import: a new file is all it takes.
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import approaches

    for mod in pkgutil.iter_modules(approaches.__path__):
        importlib.import_module(f"{approaches.__name__}.{mod.name}")


def list_approaches() -> list[str]:
    """The registered approach names, the built-in ones in the order a course teaches them."""
    _load_builtin()
    order = ["scratch", "features", "finetune"]
    return sorted(_APPROACHES, key=lambda n: (order.index(n) if n in order else len(order), n))


def get_approach(name: str) -> Approach:
    """The registered approach called ``name``.

    Raises:
        ConfigError: unknown name, listing the registered ones.
    """
    _load_builtin()
    if name not in _APPROACHES:
        raise ConfigError(f"approach={name!r} is not allowed; choose one of {', '.join(list_approaches())}")
    return _APPROACHES[name]


def approaches_help(sep: str = "; ") -> str:
    """``name: description`` of every approach (the CLI's help)."""
    return sep.join(f"{n}: {get_approach(n).description}" for n in list_approaches())
