"""Typed training configuration that round-trips through YAML and rejects unknown keys.

Every run writes its resolved config to ``RUN/config.yaml``; ``--config FILE`` reads one
back, so a run can be repeated from its folder alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
POOLS = ("auto", "avg", "catavgmax", "catavgmax-mid")
_RETIRED = frozenset({"head_epochs", "num_workers"})


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` means "pick the default for the model".

    Attributes:
        data: Dataset folder or CSV manifest.
        approach: A registered approach (``inspectnet.train.approach``): ``scratch``
            (random init + augmentation), ``features`` (frozen base, linear head on cached
            features), ``finetune`` (head first, then the base), or one of your own.
        model: Registry name (``seed-cnn``, ``efficientnet_lite0``, any timm name).
        weights: ``auto`` (bundled ImageNet weights where a package ships them, else random),
            ``none``, ``hub`` (let timm download; needs internet) or a local file path.
        img_size: Square input size; ``None`` = the model's default (180 seed-cnn, 224 Lite0).
        epochs: Training epochs (for finetune: the joint stage after the head stage).
        unfreeze: finetune step 4, how many top blocks to unfreeze (``-1`` = all; ``None`` =
            all but the stem and the stride-2/4 stages, see ``fit.auto_unfreeze``).
        lr: Learning rate (the head's; the base gets ``lr * base_lr_mult``).
        base_lr_mult: Ratio of base to head learning rate when fine-tuning.
        weight_decay: Weight decay (decoupled for AdamW).
        optimizer: ``adam``, ``adamw`` or ``sgd``; ``None`` = AdamW from scratch, SGD with
            Nesterov momentum for fine-tuning.
        batch_size: Mini-batch size.
        patience: Early stopping patience in epochs on validation loss (0 = off; ``None`` =
            15 from scratch, where the loss often plateaus before it falls, else 5).
        seed: Seed of the split, the initialisation and the augmentation.
        val_fraction / test_fraction: Split sizes when the data does not give a split.
        positive: Positive class for recall/F1/ROC (default: ``damaged``/``defective`` or
            the minority class).
        class_weights: ``auto`` (on when classes differ by more than 1.5x), ``on``, ``off``.
        augment_*: Random flips, 90-degree rotations, rotation (+-degrees) and zoom (+-fraction)
            for training. ``None`` = the approach's default: the course recipe for scratch
            (flips, +-36 deg, +-10 %), exact flips and 90-degree turns for the pretrained
            approaches (interpolated rotations shift the statistics the head was fitted on).
        tta_views: Views averaged at feature extraction/evaluation (1, 2, 4 or 8 of the
            flip/rot90 group; top-view photos of parts have no "up").
        pool: Global pooling before the classifier of a pretrained backbone: ``avg`` (the
            ImageNet head), ``catavgmax`` (average and max pooled side by side: a small
            defect that averaging dilutes into the background still reaches the head, as in
            fast.ai's default transfer head), ``catavgmax-mid`` (the same over the last map
            and the output of the block before it, whose mid-level features are less
            ImageNet-specific; EfficientNet-style backbones) or ``auto`` = ``catavgmax-mid``
            for the ``features`` approach (falling back to ``catavgmax``/``avg`` where a
            backbone lacks what it needs), ``avg`` otherwise (fine-tuning through the
            max-pooled half lost to its own head on validation; with ``auto`` finetune also
            fits the features model from the same extraction and keeps it when validation
            prefers it, recording its pool). For the seed CNN ``avg`` keeps the course's
            Flatten and ``catavgmax`` pools globally instead, the ``auto`` choice from scratch
            (validation loss 0.634 -> 0.578 and 0.572 -> 0.468 on two medium sets: Flatten
            ties its weights to positions, a defect can be anywhere).
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``32``, ``bf16`` (bfloat16 autocast, fp32 weights) or ``auto``: bf16 when
            training from scratch where bf16 is native (AVX-512 BF16 / AMX CPUs: the seed CNN
            trains 1.65x faster per step; bf16 GPUs), fp32 for the pretrained approaches
            (Lite0's depthwise convolutions gained nothing from it on the CPU, and a Lite0 train
            step on an H200 ran 4-14% slower in bf16: bench/cuda_check.py).
        skip_bad: Skip unreadable images (listed in ``RUN/skipped.csv``) instead of stopping.
        allow_leakage: Train even when the same image content sits in two splits.
        target_recall: Recall of the positive class that the inspection threshold aims for.
        devices: Processes (GPUs, or CPU processes) per node for Lightning; ``> 1`` with
            ``strategy="ddp"`` trains data-parallel (gloo on CPU, NCCL on CUDA).
        num_nodes: Machines taking part in a DDP job.
        strategy: Lightning strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``ddp_find_unused_parameters_true``...
        cache_mb: Budget in MiB for the decoded images in RAM; beyond it they go to a memmap
            file in ``RUN/cache/`` (removed at the end). ``None`` = half of the available RAM.
    """

    data: str = ""
    approach: str = "scratch"
    model: str = "seed-cnn"
    weights: str = "auto"
    img_size: int | None = None
    epochs: int = 15
    unfreeze: int | None = None
    lr: float | None = None
    base_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    optimizer: str | None = None
    batch_size: int = 32
    patience: int | None = None
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    positive: str | None = None
    class_weights: str = "auto"
    augment_flip: bool = True
    augment_rot90: bool | None = None
    augment_rotation: float | None = None
    augment_zoom: float | None = None
    tta_views: int = 1
    precision: str = "auto"
    pool: str = "auto"
    device: str = "auto"
    skip_bad: bool = False
    allow_leakage: bool = False
    target_recall: float = 0.99
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    cache_mb: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check choices and ranges; raise ConfigError naming the field and allowed values."""
        def one_of(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")

        from .train.approach import get_approach

        approach = get_approach(self.approach)  # unknown names fail with the registered ones
        if self.optimizer is not None:
            one_of("optimizer", OPTIMIZERS)
        one_of("device", DEVICES)
        one_of("class_weights", ("auto", "on", "off"))
        one_of("precision", ("auto", "32", "bf16"))
        one_of("pool", POOLS)
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1")
        if self.img_size is not None and self.img_size < 16:
            raise ConfigError(f"img_size={self.img_size} is too small; use at least 16")
        if self.tta_views not in (1, 2, 4, 8):
            raise ConfigError(f"tta_views={self.tta_views} must be 1, 2, 4 or 8")
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 0.5:
                raise ConfigError(f"{name}={v} must be in [0, 0.5)")
        for name in ("devices", "num_nodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.cache_mb is not None and self.cache_mb < 0:
            raise ConfigError(f"cache_mb={self.cache_mb} must be 0 (always on disk) or more, or None (half of free RAM)")
        if not approach.distributed and self.distributed:
            raise ConfigError(
                f"approach={self.approach} runs in one process ({approach.description}), but got "
                f"devices={self.devices}, num_nodes={self.num_nodes}, strategy={self.strategy!r}; "
                "drop those options, or use --approach finetune or scratch for DDP"
            )
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"target_recall={self.target_recall} must be in (0, 1]")
        return self

    @property
    def distributed(self) -> bool:
        """Several processes take part (DDP or another multi-process strategy)."""
        return self.devices > 1 or self.num_nodes > 1 or "ddp" in self.strategy or "fsdp" in self.strategy

    @property
    def weights_arg(self) -> bool | str:
        """``weights`` as ``create_model`` takes it: bundled weights (``auto``), none, or hub/a file."""
        if self.weights == "auto":
            return True
        if self.weights == "none":
            return False
        return self.weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys fail loudly with the list of known ones."""
        known = {f.name for f in fields(cls)}
        # Options that nothing read any more: older run folders' config.yaml still load.
        d = {k: v for k, v in d.items() if k not in _RETIRED}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {p} must hold a mapping of option: value")
        return cls.from_dict(d)

    def override(self, **kwargs: Any) -> TrainConfig:
        """A copy with the given non-None values replaced (CLI flags over a config file)."""
        d = self.to_dict()
        for k, v in kwargs.items():
            if v is None:
                continue
            if k not in d:
                raise ConfigError(f"unknown option {k!r}")
            d[k] = v
        return TrainConfig.from_dict(d)
