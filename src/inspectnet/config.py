"""Typed training configuration that round-trips through YAML and rejects unknown keys.

Every run writes its resolved config to ``RUN/config.yaml``; ``--config FILE`` reads one
back, so a run can be repeated from its folder alone.

One schema: the dataclass fields' type hints (with ``annotated_types`` bounds such as
``Ge(1)``) are the validation rules. :func:`field_problems` checks any dict against them
with pydantic in strict mode (``"96"`` is not an integer, ``8.5`` is not an integer,
``"no"`` is not a boolean; an integer where a float is due is fine) and says what is wrong
in one sentence per value. ``bundle.ModelCard`` uses the same function for ``model.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import yaml
from annotated_types import Ge, Gt, Interval

from .errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
POOLS = ("auto", "avg", "catavgmax", "catavgmax-mid")
LOGGERS = ("csv", "tensorboard", "mlflow", "none")  # train/loggers.py
TTA_VIEWS = (1, 2, 4, 8)
ORIENTATIONS = ("any", "upright")
_RETIRED = frozenset({"head_epochs", "num_workers"})


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` means "pick the default for the model".

    Attributes:
        data: Dataset folder or CSV manifest.
        approach: A registered approach (``inspectnet.train.approach``): ``features``
            (the default: frozen base, linear head on cached features), ``scratch`` (random
            init + augmentation), ``finetune`` (head first, then the base), ``auto``
            (features, then fine-tuning within ``time_budget``), or one of your own.
        model: Registry name (``seed-cnn``, ``efficientnet_lite0``, any timm name); ``None``
            = the approach's (``seed-cnn`` from scratch, ``efficientnet_lite0`` otherwise).
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
        class_weights: ``off`` (the default: an unweighted loss, so that probabilities mean
            what they say; imbalance is handled where the decision is made, by the threshold),
            ``on`` (inverse-frequency weights) or ``auto`` (on when classes differ by more than
            1.5x). On the real development set weights cost accuracy (bench/real_accuracy.py).
        orientation: ``any`` (the default: top views of parts, which have no "up": 8 flip/rot90
            views at extraction and test time, 90-degree turns in augmentation) or
            ``upright`` (photos with an up: the image and its mirror, no 90-degree turns).
        augment_*: Random flips, 90-degree rotations, rotation (+-degrees) and zoom (+-fraction)
            for training. ``None`` = the approach's default: the course recipe for scratch
            (flips, +-36 deg, +-10 %), exact flips and 90-degree turns for the pretrained
            approaches (interpolated rotations shift the statistics the head was fitted on).
        tta_views: Views averaged at feature extraction/evaluation (1, 2, 4 or 8 of the
            flip/rot90 group); ``None`` = from ``orientation`` (8 for ``any``, 2 for ``upright``).
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
        objective: How the run decides (``inspectnet.decision``): ``accuracy`` (the default:
            the most probable class), ``balanced`` (a threshold, or class priors, chosen on
            validation for balanced accuracy), ``recall`` (the positive class at the threshold
            that reaches ``target_recall`` on validation) or ``cost`` (least expected cost
            under ``cost_matrix``). Training is the same for all four: the loss is unweighted.
        cost_matrix: ``cost[true][decided]``, classes in the run's order (``model.json``'s
            ``classes``: sorted names), for ``objective: cost``.
        calibrate: Fit a temperature on validation (out-of-fold predictions for CV heads) so
            that probabilities mean what they say; stored in ``model.json`` and applied by
            ``evaluate``, ``predict``, ``serve`` and the ONNX engine.
        cv_folds: Heads on cached features (``features``, ``auto``) choose their L2 strength
            and pooling by this many folds of cross-validation on train+val, then refit on
            all of it; the threshold comes from the out-of-fold predictions. ``0`` chooses on
            the validation split alone (the head is then fitted on train only).
        time_budget: Minutes of training ``auto`` may spend: features first, then
            fine-tuning until the budget is used (the joint stage stops at the budget).
        devices: Processes (GPUs, or CPU processes) per node for Lightning; ``> 1`` with
            ``strategy="ddp"`` trains data-parallel (gloo on CPU, NCCL on CUDA).
        num_nodes: Machines taking part in a DDP job.
        strategy: Lightning strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``ddp_find_unused_parameters_true``...
        cache_mb: Budget in MiB for the decoded images in RAM; beyond it they go to a memmap
            file in ``RUN/cache/`` (removed at the end). ``None`` = half of the available RAM.
        allow_label_conflicts: Train even when one image (the same path, or identical content)
            carries two labels.
        coreset_ratio: ``anomaly``: share of the intact training patches that the greedy
            k-center coreset keeps in the memory bank (1 keeps them all).
        anomaly_quantile: ``anomaly``: when validation holds no damaged image, the threshold
            is this quantile of the intact validation images' scores.
        logger: Where the epoch metrics go besides ``history.csv``: ``csv`` (``RUN/logs/<stage>/
            metrics.csv``), ``tensorboard``, ``mlflow`` (a local store in ``RUN/mlruns``) or
            ``none`` (``train/loggers.py``).
        bank_max_mb: ``anomaly``: refuse to collect more than this many MiB of patch
            features (images x patches per image x feature dim x 4 bytes) before the coreset.
        overwrite: Replace a run already in the run folder (``model/model.json`` or
            ``metrics.json``); without it (or ``resume``) ``train`` refuses. An action, not a
            property of the run: never written to ``config.yaml``.

    Types and ranges come from the annotations below: every value is checked against them
    strictly (:func:`field_problems`), whether it comes from a flag, ``--config`` or
    ``train(**overrides)``; a field added here is checked with no further code.
    """

    data: str = ""
    approach: str = "features"
    model: str | None = None
    weights: str = "auto"
    img_size: Annotated[int, Ge(16)] | None = None
    epochs: Annotated[int, Ge(1)] = 15
    unfreeze: Annotated[int, Ge(-1)] | None = None
    lr: Annotated[float, Gt(0)] | None = None
    base_lr_mult: Annotated[float, Gt(0)] = 0.1
    weight_decay: Annotated[float, Ge(0)] = 1e-4
    optimizer: str | None = None
    batch_size: Annotated[int, Ge(1)] = 32
    patience: Annotated[int, Ge(0)] | None = None
    seed: Annotated[int, Interval(ge=0, le=2**32 - 1)] = 0  # numpy's legacy seeding stops there
    val_fraction: Annotated[float, Interval(ge=0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Interval(ge=0, lt=0.5)] = 0.15
    positive: str | None = None
    class_weights: str = "off"
    augment_flip: bool = True
    augment_rot90: bool | None = None
    augment_rotation: Annotated[float, Interval(ge=0, le=180)] | None = None
    augment_zoom: Annotated[float, Interval(ge=0, lt=1)] | None = None
    orientation: str = "any"
    tta_views: int | None = None
    precision: str = "auto"
    pool: str = "auto"
    device: str = "auto"
    skip_bad: bool = False
    allow_leakage: bool = False
    allow_label_conflicts: bool = False
    target_recall: Annotated[float, Interval(gt=0, le=1)] = 0.99
    objective: str = "accuracy"
    cost_matrix: list[list[Annotated[float, Ge(0)]]] | None = None
    calibrate: bool = True
    cv_folds: Annotated[int, Interval(ge=0, le=20)] = 5  # 1 is refused in problems(): 0 or 2..20
    time_budget: Annotated[float, Gt(0)] = 20.0
    devices: Annotated[int, Ge(1)] = 1
    num_nodes: Annotated[int, Ge(1)] = 1
    strategy: str = "auto"
    cache_mb: Annotated[int, Ge(0)] | None = None
    logger: str = "csv"
    coreset_ratio: Annotated[float, Interval(gt=0, le=1)] = 0.1
    anomaly_quantile: Annotated[float, Interval(gt=0.5, lt=1)] = 0.99
    bank_max_mb: Annotated[int, Ge(1)] = 4096
    overwrite: bool = field(default=False, metadata={"record": False})
    extra: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        """``(key, sentence)`` for every value that breaks its type, range or choices."""
        found = field_problems(type(self), {f.name: getattr(self, f.name) for f in fields(self)})
        if found:
            return found  # choices below compare values of the right type only
        choices = {"optimizer": OPTIMIZERS, "device": DEVICES, "class_weights": ("auto", "on", "off"),
                   "precision": ("auto", "32", "bf16"), "pool": POOLS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not (value is None and name == "optimizer") and value not in allowed:
                found.append((name, f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}"))
        if self.orientation not in ORIENTATIONS:
            found.append(("orientation", f"orientation={self.orientation!r} is not allowed; choose one of "
                                         f"{', '.join(ORIENTATIONS)}"))
        if self.tta_views is not None and self.tta_views not in TTA_VIEWS:
            found.append(("tta_views", f"tta_views={self.tta_views} must be 1, 2, 4 or 8"))
        if self.logger not in LOGGERS:
            found.append(("logger", f"logger={self.logger!r} is not allowed; choose one of {', '.join(LOGGERS)}"))
        if self.cv_folds == 1:
            found.append(("cv_folds", "cv_folds=1 must be 0 (choose on the validation split) or 2 to 20"))
        found += self._decision_problems()
        return found

    def _decision_problems(self) -> list[tuple[str, str]]:
        from .decision import OBJECTIVES

        if self.objective not in OBJECTIVES:
            return [("objective", f"objective={self.objective!r} is not allowed; choose one of {', '.join(OBJECTIVES)}")]
        if self.objective == "cost" and self.cost_matrix is None:
            return [("cost_matrix", "objective=cost needs a cost_matrix (rows: the true class, columns: the "
                                    "decided class, e.g. --cost-matrix '0,1;20,0')")]
        if self.cost_matrix is not None and self.objective != "cost":
            return [("objective", f"a cost_matrix is given but objective={self.objective!r}; "
                                  "set objective: cost to decide by it")]
        return []

    def check(self, source: str | None = None) -> TrainConfig:
        """Types, ranges and choices (no registry look-ups); raise the first problem.

        Args:
            source: Where the values came from (``config file PATH``): the message starts with it.

        Raises:
            ConfigError: e.g. ``config file runs/x/config.yaml: epochs='ten' is not an integer``,
                with ``key`` set to the field (the CLI adds the flag's name).
        """
        for key, text in self.problems():
            raise ConfigError(f"{source}: {text}" if source else text, key=key)
        return self

    def validate(self) -> TrainConfig:
        """Check types, choices and ranges, then the approach and the model against their
        registries; raise ConfigError naming the field and allowed values."""
        self.check()
        from .train.approach import get_approach

        approach = get_approach(self.approach)  # unknown names fail with the registered ones
        if self.model is None:
            self.model = approach.default_model
        if self.tta_views is None:
            # Top views of parts have no "up": all 8 flip/rot90 views; upright photos: the mirror.
            self.tta_views = 8 if self.orientation == "any" else 2
        _check_model_name(self.model)
        if not approach.distributed and self.distributed:
            raise ConfigError(
                f"approach={self.approach} runs in one process ({approach.description}), but got "
                f"devices={self.devices}, num_nodes={self.num_nodes}, strategy={self.strategy!r}; "
                "drop those options, or use --approach finetune or scratch for DDP"
            )
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
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> TrainConfig:
        """Build from a dict and :meth:`check` it; unknown keys fail loudly with the list of
        known ones. ``source`` as in :meth:`check`."""
        known = {f.name for f in fields(cls)}
        # Options that nothing read any more: older run folders' config.yaml still load.
        d = {k: v for k, v in d.items() if k not in _RETIRED}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError(
                (f"{source}: " if source else "")
                + f"unknown config key(s) {', '.join(map(str, unknown))}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**d).check(source)

    def save(self, path: str | Path) -> None:
        """Write ``config.yaml`` (atomically), without the fields that are actions, not settings."""
        from .io import atomic_write_text

        keep = {f.name for f in fields(self) if f.metadata.get("record", True)}
        d = {k: v for k, v in self.to_dict().items() if k in keep}
        atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        except OSError as e:
            raise ConfigError(f"config file {p} cannot be read: {e.strerror}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {p} must hold a mapping of option: value, not {type(d).__name__}")
        return cls.from_dict(d, source=f"config file {p}")

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


def _check_model_name(name: str) -> None:
    """An unknown ``--model`` is a usage error (exit 2), not a broken model file."""
    from .errors import ModelError
    from .models import model_info

    try:
        model_info(name)
    except ModelError as e:
        raise ConfigError(str(e)) from None


# ------------------------------------------------------------------ the schema, from type hints

_PHRASES = {
    "int_type": "is not an integer", "int_parsing": "is not an integer", "int_from_float": "is not an integer",
    "float_type": "is not a number", "float_parsing": "is not a number", "finite_number": "is not a finite number",
    "bool_type": "is not a boolean (true or false)", "bool_parsing": "is not a boolean (true or false)",
    "string_type": "is not a string", "dict_type": "is not a mapping", "list_type": "is not a list",
}
_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def field_problems(cls: type, values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Check ``values`` against the type hints of the dataclass ``cls``, strictly.

    Args:
        cls: A dataclass; its fields' hints (``Annotated[int, Ge(1)] | None``...) are the schema.
        values: Field name -> value; keys that are not fields are ignored, fields without a
            default must be present.

    Returns:
        ``(key, sentence)`` per problem, e.g. ``("epochs", "epochs='ten' is not an integer")``;
        empty when every value fits.
    """
    import pydantic

    try:
        _adapter(cls).validate_python(dict(values))
    except pydantic.ValidationError as e:
        return [(str(err["loc"][0]) if err["loc"] else "", _sentence(cls, err)) for err in e.errors()]
    return []


@functools.cache
def _adapter(cls: type) -> Any:
    """A pydantic TypeAdapter of a TypedDict with ``cls``'s fields and hints (strict, finite)."""
    import pydantic
    from typing_extensions import NotRequired, Required, TypedDict

    hints = typing.get_type_hints(cls, include_extras=True)
    ann = {f.name: (Required if f.default is MISSING and f.default_factory is MISSING else NotRequired)[hints[f.name]]
           for f in fields(cls)}
    schema = TypedDict(f"{cls.__name__}Fields", ann)  # type: ignore[operator]
    schema.__pydantic_config__ = pydantic.ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")
    return pydantic.TypeAdapter(schema)


def _sentence(cls: type, err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return f"{loc} is missing"
    if kind in _RANGE_ERRORS:
        text = range_text(_bounds(typing.get_type_hints(cls, include_extras=True)[err["loc"][0]]))
    else:
        text = _PHRASES.get(kind, err["msg"][:1].lower() + err["msg"][1:])
    if kind in ("int_type", "float_type") and isinstance(value, str) and _is_number(value):
        text += " (it is text; write the number without quotes" + (
            ", and YAML needs a dot in 1.0e-3" if "e" in value.lower() and "." not in value else "") + ")"
    elif kind == "string_type" and isinstance(value, (int, float)) and not isinstance(value, bool):
        text += " (put it in quotes)"
    return f"{loc}={value!r} {text}"


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _bounds(hint: Any) -> dict[str, Any]:
    """The ``gt``/``ge``/``lt``/``le`` bounds in a hint's ``Annotated`` metadata (through ``| None``)."""
    out: dict[str, Any] = {}
    origin = typing.get_origin(hint)
    if origin is Annotated:
        for m in typing.get_args(hint)[1:]:
            items = m if isinstance(m, at.GroupedMetadata) else getattr(m, "metadata", [m])
            for c in items:
                for name, kind in (("gt", at.Gt), ("ge", at.Ge), ("lt", at.Lt), ("le", at.Le)):
                    if isinstance(c, kind):
                        out[name] = getattr(c, name)
    elif origin in (typing.Union, types.UnionType):
        for a in typing.get_args(hint):
            out.update(_bounds(a))
    return out


def range_text(b: Mapping[str, Any]) -> str:
    """``must be in [0, 0.5)``, ``must be at least 1``... from a bounds dict."""
    def n(v: Any) -> str:
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"

    lo = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    hi = (b["le"], "]") if "le" in b else (b["lt"], ")") if "lt" in b else None
    if lo and hi:
        return f"must be in {lo[0]}{n(lo[1])}, {n(hi[0])}{hi[1]}"
    if lo:
        return f"must be at least {n(lo[1])}" if lo[0] == "[" else f"must be greater than {n(lo[1])}"
    if hi:
        return f"must be at most {n(hi[0])}" if hi[1] == "]" else f"must be less than {n(hi[0])}"
    return "is out of range"
