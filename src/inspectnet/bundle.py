"""The model bundle: ``model/weights.safetensors`` + ``model/model.json``.

Preprocessing, labels and the decision threshold travel with the weights, so evaluation,
export and serving need only the run folder. No pickles: safetensors holds tensors only.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import ModelError
from .io import atomic_write, atomic_write_json
from .models import Network, create_model

FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Everything needed to rebuild and use a trained network (``model.json``)."""

    architecture: str
    classes: list[str]
    positive_class: str
    img_size: int
    mean: list[float]
    std: list[float]
    threshold: float = 0.5
    tta_views: int = 1  # flip/rot90 views averaged per image when the threshold was chosen
    channels: int = 3
    pool: str = "avg"  # global pooling in front of the classifier (config ``pool``)
    input: str = "float32 RGB in [0,1], NCHW; normalisation is inside the network"
    approach: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    data_fingerprint: str = ""
    format_version: int = FORMAT_VERSION

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


def save_bundle(run: str | Path, network: Network, card: ModelCard) -> Path:
    """Write weights then card, each atomically; returns the ``model/`` folder."""
    d = Path(run) / "model"
    d.mkdir(parents=True, exist_ok=True)
    if not card.versions:
        card.versions = library_versions()
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write(d / "weights.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write_json(d / "model.json", asdict(card))
    return d


def read_card(run: str | Path) -> ModelCard:
    d = model_dir(run)
    path = d / "model.json"
    if not path.is_file():
        raise ModelError(f"{Path(run)} is not a run folder: {path} is missing (train one with `inspectnet train`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from None
    version = raw.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{path} has format_version {version}, newer than this inspectnet understands ({FORMAT_VERSION}); "
            "upgrade inspectnet to load it"
        )
    known = set(ModelCard.__dataclass_fields__)
    try:
        return ModelCard(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise ModelError(f"{path} lacks required fields: {e}") from None


@dataclass
class LoadedModel:
    network: Network
    card: ModelCard
    path: Path


def load_model(run: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a run folder and load its weights (eval mode).

    Raises:
        ModelError: missing or corrupt files, or a bundle from a newer inspectnet.
    """
    card = read_card(run)
    d = model_dir(run)
    wpath = d / "weights.safetensors"
    if not wpath.is_file():
        raise ModelError(f"{wpath} is missing; the bundle is incomplete")
    network = create_model(card.architecture, len(card.classes), pretrained=False, img_size=card.img_size,
                           pool=card.pool)
    try:
        state = load_file(str(wpath))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelError(f"{wpath} is corrupt or not a safetensors file: {e}") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{wpath} does not match architecture {card.architecture}: {e}") from None
    network.to(device).eval()
    return LoadedModel(network, card, d)
