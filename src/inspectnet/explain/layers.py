"""What the network looks at: first-layer filters, feature maps of a named layer, and the
one-call ``explain_image`` behind ``inspectnet explain RUN IMAGE``.

Layer names are the ``named_modules()`` names of the ``Network`` (``backbone.features.3``
for the seed CNN, ``backbone.blocks.5`` for a timm EfficientNet), the names that
``inspectnet summary`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .gradcam import _model_device, _restore_flags, _training_flags, cams_and_logits
from .overlay import colorize, overlay_heatmap, save_png

__all__ = [
    "LayerError",
    "conv_layer_names",
    "explain_image",
    "feature_maps",
    "first_conv",
    "first_layer_filters",
    "save_feature_maps",
    "save_filter_grid",
]


class LayerError(ModelError, ValueError):
    """A layer name that the model does not have (a ``ValueError`` and a ``ModelError``)."""


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``Conv2d`` in registration order (the stem: it sees the raw pixels).

    Raises:
        LayerError: the model has no Conv2d.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise LayerError(f"{type(model).__name__} has no Conv2d layer: no filters to show")


def first_layer_filters(model: nn.Module, pad: int = 1) -> np.ndarray:
    """The first convolution's kernels tiled in a near-square grid, one tile per filter.

    Each filter is scaled to [0, 1] on its own (its min to 0, its max to 1), as the course
    plots them: the pattern matters, not the absolute weight. With 3 input channels a tile
    is an RGB picture of the kernel; otherwise the kernel is averaged over its inputs.

    Args:
        model: Any module with a Conv2d.
        pad: Pixels of white between tiles.

    Returns:
        float32 ``(rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3)`` in [0, 1], with
        ``cols = ceil(sqrt(n_filters))`` and ``rows = ceil(n_filters / cols)``; grey images
        are repeated to 3 channels so that every grid saves the same way.
    """
    _, conv = first_conv(model)
    w = conv.weight.detach().float().cpu()  # (out, in/groups, kh, kw)
    w = w if w.shape[1] == 3 else w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    w = w.permute(0, 2, 3, 1).numpy()  # (n, kh, kw, 3)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    w = np.where(hi > lo, (w - lo) / np.maximum(hi - lo, 1e-12), 0.5)
    return _tile(w, pad=pad, fill=1.0)


def _tile(tiles: np.ndarray, pad: int, fill: float, cols: int | None = None) -> np.ndarray:
    """Arrange ``(n, h, w, c)`` tiles in a grid with ``pad`` pixels of ``fill`` around each."""
    n, h, w, c = tiles.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = tiles[k]
    return grid


def _upscale(img: np.ndarray, target: int = 512, max_factor: int = 32) -> np.ndarray:
    """Nearest-neighbour enlargement so that 3x3 kernels are visible as blocks, not blurs."""
    f = max(1, min(max_factor, target // max(img.shape[:2])))
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)


def save_filter_grid(model: nn.Module, path: str | Path) -> Path:
    """Write :func:`first_layer_filters` as a PNG, enlarged to about 512 px. Returns the path."""
    return save_png(_upscale(first_layer_filters(model)), path)


def conv_layer_names(model: nn.Module, limit: int | None = None) -> list[str]:
    """Names worth passing as ``layer``: Conv2d layers and the blocks that contain them.

    Shallow names come first when ``limit`` cuts the list (stages before the convolutions
    inside them), and the kept names are returned in network order.
    """
    names = list(dict(model.named_modules()))
    order = {n: i for i, n in enumerate(names)}
    keep = []
    for name, m in model.named_modules():
        if not name:
            continue
        if isinstance(m, nn.Conv2d) or (
            _is_block(name) and any(isinstance(s, nn.Conv2d) for s in m.modules())
        ):
            keep.append(name)
    if limit is not None and len(keep) > limit:
        keep = sorted(keep, key=lambda n: (n.count("."), order[n]))[:limit]
    return sorted(keep, key=order.__getitem__)


def _is_block(name: str) -> bool:
    # timm stages and blocks are numbered children ("blocks.5", "stages.2", "layer3"):
    # their outputs are the feature maps people ask for.
    last = name.rsplit(".", 1)[-1]
    return last.isdigit() or (last.startswith("layer") and last[5:].isdigit())


def _resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    # Also accept the backbone's own names ("blocks.5"), as timm and the papers print them.
    for cand in (layer, f"backbone.{layer}"):
        if cand and cand in modules:
            return modules[cand]
    valid = conv_layer_names(model, limit=24)
    raise LayerError(
        f"unknown layer {layer!r}; valid layers include: {', '.join(valid)} "
        f"(any name from model.named_modules() works)"
    )


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the layer's output is in hand."""


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of a named layer for one image.

    Args:
        model: An inspectnet ``Network`` (or any module).
        x: Float image ``(1, C, H, W)`` or ``(C, H, W)`` in [0, 1].
        layer: A ``named_modules()`` name, e.g. ``backbone.features.3``.

    Returns:
        ``(C, h, w)`` float tensor on the CPU.

    Raises:
        LayerError: (a ``ValueError``) unknown layer, with valid names in the message.
        ValueError: the layer's output is not a ``(1, C, h, w)`` feature map.
    """
    module = _resolve_layer(model, layer)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"feature_maps takes one image (1, C, H, W), got {tuple(x.shape)}")
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if not torch.is_tensor(out):
            raise ValueError(f"layer {layer!r} returns {type(out).__name__}, not a tensor")
        # Clone: the seed CNN's next module is ReLU(inplace=True), which would overwrite
        # a conv output we only referenced. Stopping here also skips the rest of the net.
        got.append(out.detach().clone())
        raise _Captured

    flags = _training_flags(model)
    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        model(x.to(device=_model_device(model), dtype=torch.float32))
    except _Captured:
        pass
    finally:
        handle.remove()
        _restore_flags(model, flags)
    if not got:
        raise ValueError(f"layer {layer!r} is not used by the model's forward pass")
    out = got[0]
    if out.ndim != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}, not a (1, C, h, w) map"
        )
    return out[0].float().cpu()


def save_feature_maps(
    maps: torch.Tensor | np.ndarray,
    path: str | Path,
    max_maps: int = 32,
    colormap: str = "viridis",
) -> Path:
    """Write the first ``max_maps`` channels of a ``(C, h, w)`` map as a grid PNG.

    Each channel is scaled to [0, 1] on its own: a channel's pattern, not its magnitude,
    is what tells what it detects. Small maps are enlarged (nearest) to stay visible.
    """
    if torch.is_tensor(maps):
        maps = maps.detach().float().cpu().numpy()
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"feature maps must be (C, h, w), got shape {a.shape}")
    a = a[: max(1, max_maps)]
    lo = a.min(axis=(1, 2), keepdims=True)
    hi = a.max(axis=(1, 2), keepdims=True)
    a = np.where(hi > lo, (a - lo) / np.maximum(hi - lo, 1e-12), 0.0)
    f = max(1, 64 // max(a.shape[1:]))  # each tile at least ~64 px
    tiles = np.stack([colorize(np.kron(m, np.ones((f, f))), colormap) for m in a]) / 255.0
    return save_png(_tile(tiles, pad=2, fill=1.0), path)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape}")
    img = img[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    if np.issubdtype(img.dtype, np.integer):  # uint8 (or 16-bit) pixels; floats are [0, 1]
        t = t / float(np.iinfo(img.dtype).max)
    return t.unsqueeze(0)


def explain_image(
    model: nn.Module,
    image: np.ndarray,
    out_dir: str | Path,
    stem: str,
    layer: str | None = None,
    class_names: Sequence[str] | None = None,
    target_class: int | None = None,
    alpha: float = 0.45,
    display_image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Everything ``inspectnet explain`` shows for one image, written to ``out_dir``.

    Files: ``<stem>_gradcam.png``, ``<stem>_gradcam++.png`` and ``<stem>_layercam.png``
    (heatmaps over the image; LayerCAM from the finer stage before the last),
    ``filters.png`` (first-layer filters) and, when ``layer`` is given,
    ``<stem>_<layer>_maps.png`` (its first 32 feature maps).

    Args:
        model: An inspectnet ``Network``.
        image: uint8 ``(H, W, 3)`` RGB already at the model's input size (the caller
            resizes, with the same rule as prediction).
        out_dir: Output folder (created).
        stem: File-name prefix, usually the image's stem.
        layer: Optional layer name for feature maps.
        class_names: Names for the class indices; defaults to ``"0"``, ``"1"``...
        target_class: Class to explain; default the predicted one.
        alpha: Heatmap opacity in the overlays.
        display_image: Optional full-resolution photo (uint8 RGB) to draw the heatmaps
            on; by default the input image, enlarged to at least 256 px so that a 64 px
            input stays readable.

    Returns:
        ``{"predicted": int, "label": str, "target_class": int, "probabilities":
        {name: float}, "files": {"gradcam", "gradcam++", "layercam", "filters"[, "maps"]: Path}}``.

    Raises:
        LayerError: unknown ``layer``; ValueError: bad image or class index.
    """
    out_dir = Path(out_dir)
    x = _image_tensor(image)
    if display_image is None:
        img_u8 = (x[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        f = max(1, 256 // max(img_u8.shape[:2]))
        display_image = np.repeat(np.repeat(img_u8, f, axis=0), f, axis=1)
    if layer is not None:
        _resolve_layer(model, layer)  # fail before writing anything
    cams, logits = cams_and_logits(model, x, target_class, methods=("gradcam", "gradcam++", "layercam"))
    probs = torch.softmax(logits[0], dim=0).tolist()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(probs))]
    if len(names) != len(probs):
        raise ValueError(f"{len(names)} class names for a model with {len(probs)} outputs")
    pred = int(np.argmax(probs))
    files: dict[str, Path] = {}
    for method, cam in cams.items():
        files[method] = save_png(
            overlay_heatmap(display_image, cam[0], alpha=alpha), out_dir / f"{stem}_{method}.png"
        )
    files["filters"] = save_filter_grid(model, out_dir / "filters.png")
    if layer is not None:
        maps = feature_maps(model, x, layer)
        files["maps"] = save_feature_maps(maps, out_dir / f"{stem}_{layer}_maps.png")
    return {
        "predicted": pred,
        "label": names[pred],
        "target_class": pred if target_class is None else int(target_class),
        "probabilities": {n: float(p) for n, p in zip(names, probs)},
        "files": files,
    }
