"""The model card (``model.json``): its schema, its checks, and reading it, with no torch.

``bundle`` saves and loads the weights beside it; the torch-free station
(:mod:`inspectnet.station`) and the ONNX engine need only this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval

from .config import POOLS, TTA_VIEWS, field_problems
from .decision import RULES, cost_matrix_problems
from .errors import ModelError

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class ModelCard:
    """Everything needed to rebuild and use a trained network (``model.json``).

    The fields' type hints are the schema :func:`read_card` checks ``model.json`` against
    (strictly, with :func:`~inspectnet.config.field_problems`); :func:`card_problems` adds
    the rules that tie fields together (the positive class among the classes...).
    """

    architecture: str
    classes: list[str]
    positive_class: str
    img_size: Annotated[int, Ge(16)]
    mean: list[float]
    std: list[float]
    threshold: Annotated[float, Interval(ge=0, le=1)] = 0.5  # the inspection operating point (target recall)
    # How the class is decided (inspectnet.decision): cards from before these fields decide by
    # ``threshold``, as they did; new runs record the rule their ``objective`` chose.
    decision: str = "threshold"
    decision_threshold: Annotated[float, Interval(ge=0, le=1)] | None = None  # the threshold rule's cut
    cost_matrix: list[list[float]] | None = None  # the cost rule's cost[true][decided]
    objective: str = ""
    temperature: Annotated[float, Gt(0)] = 1.0  # calibration: p <- normalise(p ** (1 / T))
    # Anomaly detectors (approach anomaly): the positive logit is (score - center) / scale,
    # so predictors report the image's anomaly score itself (``anomaly_score``).
    anomaly_center: float | None = None
    anomaly_scale: Annotated[float, Gt(0)] | None = None
    tta_views: int = 1  # flip/rot90 views averaged per image when the threshold was chosen
    channels: Annotated[int, Ge(1)] = 3
    pool: str = "avg"  # global pooling in front of the classifier (config ``pool``)
    input: str = "float32 RGB in [0,1], NCHW; normalisation is inside the network"
    approach: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    data_fingerprint: str = ""
    format_version: Annotated[int, Ge(0)] = FORMAT_VERSION
    weights_sha256: str = ""  # of weights.safetensors as saved; "" in bundles from before it was recorded

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)


def model_dir(run: str | Path) -> Path:
    """Accept a run folder or its ``model/`` folder."""
    p = Path(run)
    return p if (p / "model.json").is_file() else p / "model"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def card_problems(raw: dict[str, Any]) -> list[str]:
    """What is wrong with a ``model.json`` mapping, one sentence each; empty when it is sound.

    Types and ranges come from :class:`ModelCard`'s hints (strict: ``"2"`` is not an
    integer); then the rules across fields: at least two distinct classes, the positive
    class among them, ``mean``/``std`` with one value per channel, ``std`` positive,
    ``tta_views`` 1/2/4/8, a known pool.
    """
    found = [text for _, text in field_problems(ModelCard, raw)]
    if found:
        return found
    c = ModelCard(**{k: v for k, v in raw.items() if k in _CARD_FIELDS})
    if len(c.classes) < 2 or len(set(c.classes)) != len(c.classes):
        found.append(f"classes={c.classes!r} must name at least 2 classes, each once")
    if c.positive_class not in c.classes:
        found.append(f"positive_class={c.positive_class!r} is not one of the classes {', '.join(map(repr, c.classes))}")
    for name in ("mean", "std"):
        v = getattr(c, name)
        if len(v) != c.channels:
            found.append(f"{name}={v!r} has {len(v)} value(s); channels={c.channels} needs {c.channels}")
    if any(v <= 0 for v in c.std):
        found.append(f"std={c.std!r} must be positive")
    if c.tta_views not in TTA_VIEWS:
        found.append(f"tta_views={c.tta_views!r} must be 1, 2, 4 or 8")
    pools = [x for x in POOLS if x != "auto"]
    if c.pool not in pools:
        found.append(f"pool={c.pool!r} is not allowed; choose one of {', '.join(pools)}")
    if c.decision not in RULES:
        found.append(f"decision={c.decision!r} is not allowed; choose one of {', '.join(RULES)}")
    elif c.decision == "cost":
        found += cost_matrix_problems(c.cost_matrix, c.classes)
    if not math.isfinite(c.temperature):
        found.append(f"temperature={c.temperature!r} must be a finite number > 0")
    return found


_CARD_FIELDS = frozenset(f.name for f in fields(ModelCard))


def read_card(run: str | Path) -> ModelCard:
    """The checked model card of a run folder (or of its ``model/`` folder).

    Raises:
        ModelError: no ``model.json``, not JSON, not an object, from a newer inspectnet, or
            a value of the wrong type or out of range (naming the file, key and value).
    """
    d = model_dir(run)
    path = d / "model.json"
    if not path.is_file():
        raise ModelError(f"{Path(run)} is not a run folder: {path} is missing (train one with `inspectnet train`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise ModelError(f"{path} cannot be read: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path} must hold a JSON object (the model card), not a {type(raw).__name__}")
    version = raw.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{path}: format_version={version!r} is not an integer; "
                         f"this inspectnet reads 0 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{path} has format_version {version}, newer than this inspectnet understands ({FORMAT_VERSION}); "
            "upgrade inspectnet to load it"
        )
    problems = card_problems(raw)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelError(f"{path}: " + "; ".join(problems[:3]) + more)
    return ModelCard(**{k: v for k, v in raw.items() if k in _CARD_FIELDS})
