"""Heatmap to picture: colour a Grad-CAM map and blend it over the photo.

Only numpy, Pillow and matplotlib's colormap tables are used (no pyplot figure), so these
helpers are cheap enough for the REST service to call on every request.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

__all__ = ["colorize", "heatmap_png_bytes", "overlay_heatmap", "resize_map", "save_png", "to_uint8"]


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Convert an image array to uint8: floats are read as [0, 1] (clipped), ints as 0..255."""
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def resize_map(cam: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float ``(h, w)`` map to ``(H, W)`` (a no-op when sizes match)."""
    from PIL import Image

    cam = np.ascontiguousarray(cam, dtype=np.float32)  # Pillow's "F" mode wants this layout
    if cam.shape == tuple(size_hw):
        return cam
    im = Image.fromarray(cam).resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def colorize(cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map a ``(H, W)`` array in [0, 1] to an RGB uint8 ``(H, W, 3)`` with a matplotlib colormap.

    Args:
        cam: Values in [0, 1] (clipped; NaN counts as 0).
        colormap: Any matplotlib colormap name; ``jet`` is the Grad-CAM paper's, ``turbo``
            a perceptually smoother alternative.

    Raises:
        ValueError: ``cam`` is not 2-D or the colormap is unknown.
    """
    import matplotlib

    c = np.asarray(cam, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H, W), got shape {c.shape}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {colormap!r}; try 'jet', 'turbo' or 'viridis'"
        ) from None
    c = np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)
    # bytes=True returns uint8 RGBA straight from the lookup table: no float round trip.
    return cmap(c, bytes=True)[..., :3]


def overlay_heatmap(
    image: np.ndarray,
    cam: np.ndarray,
    alpha: float = 0.45,
    colormap: str = "jet",
) -> np.ndarray:
    """Blend a coloured heatmap over an image: ``(1 - alpha) * image + alpha * colour(cam)``.

    Args:
        image: uint8 ``(H, W, 3)`` RGB (``(H, W)`` grey and ``(H, W, 4)`` RGBA are accepted;
            float images are read as [0, 1]).
        cam: ``(h, w)`` map in [0, 1]; resized bilinearly when it is not ``(H, W)``, so a
            model-size map can be laid over the full-size photo.
        alpha: Weight of the heatmap, in [0, 1].
        colormap: matplotlib colormap name.

    Returns:
        uint8 ``(H, W, 3)``.

    Raises:
        ValueError: bad shapes or an alpha outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = to_uint8(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    img = img[..., :3]
    heat = colorize(resize_map(cam, img.shape[:2]), colormap)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * heat.astype(np.float32)
    return (np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def heatmap_png_bytes(cam: np.ndarray, colormap: str = "jet") -> bytes:
    """The coloured heatmap alone, encoded as PNG bytes (for the REST API and the web page)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(colorize(cam, colormap)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(arr: np.ndarray, path: str | Path) -> Path:
    """Write an image array as PNG, atomically (a crash never leaves half a file).

    Args:
        arr: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA; uint8, or float in [0, 1].
        path: Destination; parent folders are created.

    Returns:
        ``path`` as a Path.
    """
    from PIL import Image

    from ..io import atomic_write

    a = to_uint8(arr)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"cannot save an array of shape {a.shape} as PNG")
    if a.ndim == 3 and a.shape[2] == 3:
        a = np.ascontiguousarray(a)
    im = Image.fromarray(a)
    # The temporary file ends in .tmp, so Pillow must be told the format.
    return atomic_write(path, lambda p: im.save(p, format="PNG"))
