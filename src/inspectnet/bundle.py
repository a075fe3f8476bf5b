"""The model bundle: ``model/weights.safetensors`` + ``model/model.json``.

Preprocessing, labels and the decision threshold travel with the weights, so evaluation,
export and serving need only the run folder. No pickles: safetensors holds tensors only.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .card import (  # noqa: F401 - the card lives in card.py (torch-free); bundle re-exports it
    _CARD_FIELDS, FORMAT_VERSION, WEIGHTS_FILE, ModelCard, card_problems, model_dir, read_card, sha256_file)
from .errors import ModelError
from .io import atomic_write, atomic_write_json, make_dir
from .models import Network, create_model


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
