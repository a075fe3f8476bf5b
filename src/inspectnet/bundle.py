"""The model bundle: ``model/weights.safetensors`` + ``model/model.json``.

Preprocessing, labels and the decision threshold travel with the weights, so evaluation,
export and serving need only the run folder. No pickles: safetensors holds tensors only.
"""

from __future__ import annotations

import hashlib
import math
import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt, Interval
from safetensors.torch import load_file, save_file

from .config import POOLS, TTA_VIEWS, field_problems
from .decision import RULES, cost_matrix_problems
from .errors import ModelError
from .io import atomic_write, atomic_write_json, make_dir
from .models import Network, create_model

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


def library_versions() -> dict[str, str]:
    import lightning
    import timm
    import torchvision

    from ._version import __version__

    return {
        "inspectnet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
    }


def model_dir(run: str | Path) -> Path:
    """Accept a run folder or its ``model/`` folder."""
    p = Path(run)
    return p if (p / "model.json").is_file() else p / "model"


def existing_run(run_dir: str | Path) -> Path | None:
    """The file that shows ``run_dir`` already holds a run (its bundle or its metrics), or None."""
    for marker in (Path(run_dir) / "model" / "model.json", Path(run_dir) / "metrics.json"):
        if marker.is_file():
            return marker
    return None


def refuse_existing_run(run_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse to train into a folder that already holds a run, unless ``overwrite``.

    Raises:
        ConfigError: naming the folder and the way out (``--overwrite``, ``--resume``).
    """
    marker = existing_run(run_dir)
    if marker is not None and not overwrite:
        from .errors import ConfigError

        raise ConfigError(f"{run_dir} already holds a run ({marker} exists); pass --overwrite "
                          "(overwrite=True in Python) to replace it, --resume to continue it, "
                          "or choose another --out", key="overwrite")


#: Where ``--overwrite`` keeps the replaced run until the new one is complete.
PREVIOUS_RUN = "previous-run"


def set_aside_previous_run(run_dir: str | Path) -> Path:
    """Move a run folder's contents into ``RUN/previous-run/`` (replacing an older one there).

    ``--overwrite`` calls this before training, and :func:`drop_previous_run` once the new run
    has written everything: a crash or Ctrl-C in between leaves the old run whole beside the
    new one's partial files, never a mix of the two in one folder.

    Raises:
        StorageError: the folder cannot be rearranged (read-only, another file system).
    """
    import shutil

    from .io import storage_error

    run_dir = Path(run_dir)
    previous = run_dir / PREVIOUS_RUN
    try:
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        for entry in list(run_dir.iterdir()):
            if entry.name != PREVIOUS_RUN:
                entry.rename(previous / entry.name)
    except OSError as e:
        raise storage_error(e, previous) from None
    return previous


def drop_previous_run(run_dir: str | Path) -> None:
    """Remove ``RUN/previous-run/`` once the run that replaced it is complete."""
    import shutil

    shutil.rmtree(Path(run_dir) / PREVIOUS_RUN, ignore_errors=True)


def save_bundle(run: str | Path, network: Network, card: ModelCard) -> Path:
    """Write weights then card, each atomically; returns the ``model/`` folder.

    The card records the SHA-256 of the weights file, so :func:`load_model` can tell a
    corrupted file from a good one.

    Raises:
        StorageError: the folder or a file cannot be written (the previous files stay).
    """
    d = make_dir(Path(run) / "model")
    if not card.versions:
        card.versions = library_versions()
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    size = sum(t.numel() * t.element_size() for t in state.values())
    atomic_write(d / WEIGHTS_FILE, lambda p: _save_weights(state, p), size=size)
    card.weights_sha256 = sha256_file(d / WEIGHTS_FILE)
    atomic_write_json(d / "model.json", asdict(card))
    return d


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except Exception as e:  # noqa: BLE001 - SafetensorError wraps the OS error in its text
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


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


@dataclass
class LoadedModel:
    network: Network
    card: ModelCard
    path: Path


def load_model(run: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a run folder and load its weights (eval mode).

    Raises:
        ModelError: missing or corrupt files (a checksum that differs from the card's, a
            weight that is NaN or infinite), or a bundle from a newer inspectnet.
    """
    card = read_card(run)
    d = model_dir(run)
    wpath = d / WEIGHTS_FILE
    if not wpath.is_file():
        raise ModelError(f"{wpath} is missing; the bundle is incomplete")
    network = create_model(card.architecture, len(card.classes), pretrained=False, img_size=card.img_size,
                           pool=card.pool)
    try:
        state = load_file(str(wpath))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelError(f"{wpath} is corrupt or not a safetensors file: {e}") from None
    changed = bool(card.weights_sha256) and sha256_file(wpath) != card.weights_sha256
    changed_why = "its SHA-256 differs from the one model.json recorded when it was saved"
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise ModelError(f"{wpath}: tensor {bad!r} holds non-finite values (NaN or inf); "
                         + (f"the file is corrupt ({changed_why})" if changed
                            else "the weights are corrupt, or training diverged"))
    if changed:
        raise ModelError(f"{wpath} is corrupt: {changed_why}; restore it from a copy or train again")
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{wpath} does not match architecture {card.architecture}: {e}") from None
    network.to(device).eval()
    return LoadedModel(network, card, d)
