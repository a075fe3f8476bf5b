"""Grad-CAM, Grad-CAM++ and LayerCAM for any inspectnet model, plus "does it point at the damage?".

Every inspectnet ``Network`` exposes ``forward_features`` (the last convolutional feature
map, for the seed CNN and for timm backbones alike) and ``forward_head`` (pooling and
classifier). Grad-CAM needs only the activations ``A`` of that map and the gradient of a
class score with respect to them, so we cut the graph there: the features are computed
without a graph, detached, marked as requiring grad, and only the head is differentiated.
That needs no hooks, works with frozen parameters (``requires_grad=False``) and in eval
mode, and never writes ``.grad`` into the model's parameters.

LayerCAM weights every position of a map by its own positive gradient instead of one
weight per channel, which keeps it meaningful on a finer stage. We compute it on the stage
one resolution step before the last (14x14 instead of 7x7 for EfficientNet at 224 px), cut
there by a forward hook the same way; on the synthetic set it points at small damage about
twice as often as last-stage Grad-CAM (see ``inspectnet evaluate --masks``).

Every map is placed back on the image by the receptive-field centres of its cells (traced
from the strided layers), not by a plain resize, which would shift EfficientNet's maps
half a cell (16 px at 224) down and to the right.

References: Selvaraju et al., "Grad-CAM", ICCV 2017; Chattopadhay et al., "Grad-CAM++",
WACV 2018 (closed-form weights as in the pytorch-grad-cam package); Jiang et al.,
"LayerCAM", IEEE TIP 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "METHODS",
    "cams_and_logits",
    "dilate",
    "energy_inside",
    "grad_cam",
    "grad_cam_batch",
    "pointing_game",
]

METHODS = ("gradcam", "gradcam++", "layercam")


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_class: int | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """Class-activation heatmap of one image, at the input's resolution.

    Args:
        model: An inspectnet ``Network`` (anything with ``forward_features`` returning
            ``(B, C, h, w)`` and ``forward_head``).
        x: Float image ``(1, C, H, W)`` (or ``(C, H, W)``) in [0, 1], as the model takes it.
        target_class: Class whose evidence to show; ``None`` uses the predicted class.
        method: ``"gradcam"`` or ``"gradcam++"``.

    Returns:
        float32 ``(H, W)`` in [0, 1], scaled so that its maximum is 1 (all zeros when the
        model has no positive evidence for the class anywhere).

    Raises:
        ValueError: bad shapes, an unknown method, or a class index out of range.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"grad_cam takes one image (1, C, H, W); got shape {tuple(x.shape)}; "
            "use grad_cam_batch for several"
        )
    targets = None if target_class is None else [target_class]
    return grad_cam_batch(model, x, targets, method=method)[0]


def grad_cam_batch(
    model: nn.Module,
    x: torch.Tensor,
    target_classes: Sequence[int] | torch.Tensor | int | None = None,
    method: str = "gradcam",
) -> np.ndarray:
    """Heatmaps for a batch with one forward and one backward pass (for galleries).

    The backward pass differentiates the sum of each image's selected logit; in eval mode
    images do not interact, so each image's gradient is that of its own score.

    Args:
        model: An inspectnet ``Network``.
        x: Float images ``(B, C, H, W)`` in [0, 1].
        target_classes: One class per image, one int for all, or ``None`` for each image's
            predicted class.
        method: ``"gradcam"`` or ``"gradcam++"``.

    Returns:
        float32 ``(B, H, W)``, each map in [0, 1].
    """
    cams, _ = cams_and_logits(model, x, target_classes, methods=(method,))
    return cams[method]


def cams_and_logits(
    model: nn.Module,
    x: torch.Tensor,
    target_classes: Sequence[int] | torch.Tensor | int | None = None,
    methods: Sequence[str] = METHODS,
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Several CAM variants from a single forward/backward, and the logits on the way.

    ``explain_image`` uses this to get the prediction, Grad-CAM and Grad-CAM++ at the cost
    of one pass. Arguments as in :func:`grad_cam_batch`.

    Returns:
        ``({method: (B, H, W) float32 maps}, logits (B, n_classes) on the CPU, detached)``.
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {m!r}; choose from {', '.join(METHODS)}")
    if not torch.is_tensor(x) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"expected a float tensor (B, C, H, W) in [0, 1], got {shape}")
    if not torch.is_floating_point(x):
        raise ValueError(
            f"expected float images in [0, 1], got dtype {x.dtype}; divide by 255 first"
        )
    device = _model_device(model)
    x = x.detach().to(device=device, dtype=torch.float32)
    if getattr(model, "is_anomaly", False):  # PatchCore: its anomaly map is the heatmap
        return _anomaly_maps(model, x, methods)
    H, W = x.shape[-2:]

    stage = _finer_stage(model) if "layercam" in methods else None
    captured: dict[str, torch.Tensor] = {}

    def _cut(_m: nn.Module, _i: tuple, o: torch.Tensor) -> torch.Tensor:
        # The stage's output becomes a leaf: the layers before it build no graph worth keeping.
        captured["A"] = o.detach().requires_grad_(True)
        return captured["A"]

    modes = _training_flags(model)
    model.eval()  # dropout off, BatchNorm on running stats: the map of the deployed model
    handle = stage.register_forward_hook(_cut) if stage is not None else None
    try:
        with torch.set_grad_enabled(stage is not None), _LayerTrace(model) as trace:
            feats = model.forward_features(x)
        _check_map(feats)
        if "A" not in captured or not feats.requires_grad:
            captured.pop("A", None)
            # A leaf in the head's own input layout: the gradient is then exactly dScore/dA.
            feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(feats)
            if logits.ndim != 2:
                raise ValueError(
                    f"forward_head returned shape {tuple(logits.shape)}, expected (B, n)"
                )
            idx = _targets(target_classes, logits)
            score = logits.gather(1, idx[:, None]).sum()
            grads = torch.autograd.grad(score, [feats] + ([captured["A"]] if "A" in captured else []))
    finally:
        if handle is not None:
            handle.remove()
        _restore_flags(model, modes)

    A, G = feats.detach().double(), grads[0].double()  # float64: the ++ weights divide small numbers
    if _is_nhwc(A, model):
        A, G = A.permute(0, 3, 1, 2), G.permute(0, 3, 1, 2)
    out: dict[str, np.ndarray] = {}
    for m in methods:
        a, g = A, G
        if m == "layercam" and len(grads) > 1 and captured["A"].ndim == 4:
            a, g = captured["A"].detach().double(), grads[1].double()
        if m == "gradcam":
            cam = (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(dim=1, keepdim=True)
        elif m == "gradcam++":
            cam = (_gradcam_pp_weights(a, g)[:, :, None, None] * a).sum(dim=1, keepdim=True)
        else:  # LayerCAM: every position weighted by its own positive gradient
            cam = (F.relu(g) * a).sum(dim=1, keepdim=True)
        h, w = cam.shape[-2:]
        cam = upsample_to_input(F.relu(cam), trace.grid(0, H, h), trace.grid(1, W, w), size=(H, W))[:, 0]
        out[m] = _scale_to_unit(cam).float().cpu().numpy()
    return out, logits.detach().float().cpu()


class _LayerTrace:
    """Records the geometry of every strided convolution and pooling layer during a forward
    pass, to find where each cell of the final feature map sits in the input.

    Cell ``i`` of a map reached through layers ``(kernel k, stride s, leading pad p)`` is
    centred on input pixel ``S * i + O`` with ``S = prod(s)`` and ``O`` accumulating
    ``S_before * ((k - 1) / 2 - p)`` layer by layer. For EfficientNet (symmetric padding)
    that is ``32 * i``; a plain bilinear resize (``align_corners=False``) assumes
    ``32 * i + 15.5`` and so shifts every heatmap half a cell down and to the right. For a
    2x2 max-pool chain (the seed CNN) both agree. Layers on a side branch (a ResNet's
    strided 1x1 shortcut) are skipped because their input no longer has the running size.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.records: list[tuple[tuple[int, int], tuple[int, int], tuple, tuple, tuple, tuple]] = []
        self.handles: list = []

    def __enter__(self) -> "_LayerTrace":
        for mod in self.model.modules():
            if isinstance(mod, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                self.handles.append(mod.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for hnd in self.handles:
            hnd.remove()
        self.handles.clear()

    def _hook(self, mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not inputs or not torch.is_tensor(inputs[0]) or inputs[0].ndim != 4 or output.ndim != 4:
            return
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        pad = getattr(mod, "padding", 0)
        pad = (0, 0) if isinstance(pad, str) else pair(pad)  # "same"/"valid": inferred from the sizes
        self.records.append((tuple(inputs[0].shape[-2:]), tuple(output.shape[-2:]), pair(mod.kernel_size),
                             pair(mod.stride if mod.stride is not None else mod.kernel_size), pad,
                             pair(getattr(mod, "dilation", 1))))

    def grid(self, axis: int, size: int, cells: int) -> tuple[float, float]:
        """``(S, O)`` along ``axis`` (0 height, 1 width) of an input ``size`` pixels long
        whose map has ``cells`` cells: cell ``i`` is centred on input pixel ``S * i + O``.
        Falls back to an even spread of the cells over the input when the traced layers do
        not lead to ``cells`` (an unusual backbone)."""
        S, O, cur = 1.0, 0.0, size
        for rin, rout, k, s, p, d in self.records:
            i_in, i_out = rin[axis], rout[axis]
            if i_in != cur or i_out == i_in:
                continue
            keff = d[axis] * (k[axis] - 1) + 1
            pad = p[axis]
            if (i_in + 2 * pad - keff) // s[axis] + 1 != i_out:  # padded inside forward (TF "same")
                pad = max((i_out - 1) * s[axis] + keff - i_in, 0) // 2
            O += S * ((keff - 1) / 2 - pad)
            S *= s[axis]
            cur = i_out
            if cur == cells:
                break
        if cur != cells:
            S = size / cells
            return S, (S - 1) / 2
        return S, O


@torch.no_grad()
def _anomaly_maps(model: nn.Module, x: torch.Tensor, methods: Sequence[str]
                  ) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """An anomaly detector's map on its own fixed [0, 1] scale, under every method's name
    (it has no gradients to weigh: the map is per-patch distance to the intact bank)."""
    scores, maps = model.scores_and_maps(x)  # type: ignore[operator]
    unit = model.unit_map(maps).float().cpu().numpy()  # type: ignore[operator]
    return {m: unit for m in methods}, model.logits(scores).float().cpu()  # type: ignore[operator]


def _finer_stage(model: nn.Module) -> nn.Module | None:
    """The stage one resolution step before the last feature map (stride 16 when the last
    is 32), from timm's ``feature_info``: where LayerCAM finds small damage. None when the
    model does not describe its stages (LayerCAM then uses the last map)."""
    backbone = getattr(model, "backbone", model)
    info = getattr(backbone, "feature_info", None)
    try:
        stages = [(int(f["reduction"]), str(f["module"])) for f in info]
    except (TypeError, KeyError, ValueError):
        return None
    if len(stages) < 2:
        return None
    last = stages[-1][0]
    finer = [name for red, name in stages if red == last // 2] or [name for red, name in stages if red < last][-1:]
    if not finer:
        return None
    try:
        return backbone.get_submodule(finer[-1])
    except AttributeError:
        return None


def upsample_to_input(cam: torch.Tensor, grid_y: tuple[float, float], grid_x: tuple[float, float],
                      size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of ``(B, 1, h, w)`` maps to ``size``, placing cell ``i`` at input
    pixel ``S * i + O`` of each axis (see :class:`_LayerTrace`); beyond the outermost cell
    centres the edge value holds."""
    B, _, h, w = cam.shape

    def axis(n_px: int, n_cells: int, geom: tuple[float, float]) -> torch.Tensor:
        u = (torch.arange(n_px, dtype=cam.dtype, device=cam.device) - geom[1]) / geom[0]
        return 2 * u / (n_cells - 1) - 1 if n_cells > 1 else torch.zeros_like(u)

    gy, gx = torch.meshgrid(axis(size[0], h, grid_y), axis(size[1], w, grid_x), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(B, -1, -1, -1)
    return F.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _gradcam_pp_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights: positive gradients weighted by the closed-form alphas."""
    g2 = G.pow(2)
    g3 = g2 * G
    sum_a = A.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-7)
    alpha = torch.where(G != 0, alpha, torch.zeros_like(alpha))
    return (alpha * F.relu(G)).sum(dim=(2, 3))


def _scale_to_unit(cam: torch.Tensor) -> torch.Tensor:
    """Divide each map by its maximum; a map with no positive value stays all zeros."""
    cam = cam.clamp_min(0)
    peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def _targets(target_classes, logits: torch.Tensor) -> torch.Tensor:
    B, n = logits.shape
    if target_classes is None:
        return logits.argmax(dim=1)
    if isinstance(target_classes, (int, np.integer)):
        idx = torch.full((B,), int(target_classes), dtype=torch.long)
    else:
        idx = torch.as_tensor(
            list(map(int, target_classes))
            if not torch.is_tensor(target_classes)
            else target_classes,
            dtype=torch.long,
        ).flatten()
    if idx.numel() != B:
        raise ValueError(f"{idx.numel()} target classes for a batch of {B} images")
    bad = [int(i) for i in idx if not 0 <= int(i) < n]
    if bad:
        raise ValueError(
            f"target class {bad[0]} out of range: the model has {n} classes (0..{n - 1})"
        )
    return idx.to(logits.device)


def _check_map(feats: torch.Tensor) -> None:
    if feats.ndim != 4:
        raise ValueError(
            f"Grad-CAM needs a convolutional feature map (B, C, h, w); this model's "
            f"forward_features returns shape {tuple(feats.shape)} (a transformer?)"
        )


def _is_nhwc(feats: torch.Tensor, model: nn.Module) -> bool:
    """True for the few timm models (Swin, some MLP-mixers) whose feature map is NHWC."""
    try:
        c = int(model.num_features)
    except (AttributeError, TypeError, ValueError, NotImplementedError):  # bare backbone: NCHW
        return False
    return feats.shape[1] != c and feats.shape[-1] == c


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    # Per module, not model.training: fine-tuning keeps BatchNorm in eval inside a training
    # model, and explaining must hand that mixed state back untouched.
    return [(m, m.training) for m in model.modules()]


def _restore_flags(model: nn.Module, flags: list[tuple[nn.Module, bool]]) -> None:
    for m, was in flags:
        m.training = was


# ---------------------------------------------------------------- localisation metrics


def _check_pair(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.nan_to_num(np.asarray(cam, dtype=np.float64), nan=0.0)
    m = np.asarray(mask).astype(bool)
    if c.ndim != 2 or c.shape != m.shape:
        raise ValueError(f"cam and mask must be 2-D of the same shape, got {c.shape} and {m.shape}")
    return c, m


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a boolean mask by ``px`` pixels in every direction (a square structuring element)."""
    m = np.asarray(mask).astype(bool)
    if px <= 0:
        return m.copy()
    t = torch.from_numpy(m.astype(np.float32))[None, None]
    return F.max_pool2d(t, kernel_size=2 * px + 1, stride=1, padding=px)[0, 0].numpy() > 0


def pointing_game(cam: np.ndarray, mask: np.ndarray, dilate_px: int = 4) -> bool:
    """Does the heatmap's hottest pixel fall on the annotated damage?

    The pointing game of Zhang et al. (2016): a hit when the argmax of the map lies inside
    the ground-truth mask, dilated by ``dilate_px`` because a heatmap upsampled from a
    coarse (e.g. 1/8 or 1/32) feature map cannot be more precise than a few pixels.

    Args:
        cam: ``(H, W)`` heatmap.
        mask: ``(H, W)`` boolean damage mask.
        dilate_px: Tolerance in pixels.

    Returns:
        True on a hit. A constant map points nowhere and counts as a miss.
    """
    c, m = _check_pair(cam, mask)
    if c.max() <= c.min():
        return False
    i, j = np.unravel_index(int(np.argmax(c)), c.shape)
    return bool(dilate(m, dilate_px)[i, j])


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heatmap's total mass that lies inside the mask (0 for an empty map).

    Compare it with ``mask.mean()``, what a uniform map would score, to judge it.
    """
    c, m = _check_pair(cam, mask)
    c = np.clip(c, 0.0, None)
    total = c.sum()
    return float(c[m].sum() / total) if total > 0 else 0.0
