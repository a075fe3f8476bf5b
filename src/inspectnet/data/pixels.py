"""Pillow and numpy only: decode an image file to RGB pixels, or say exactly why not.

The torch-free half of :mod:`inspectnet.data.decode`, shared with the inspection station
(:mod:`inspectnet.station`), which runs without torch: the same modes, the same EXIF turn,
the same limits and the same messages. Resizing here is Pillow's antialiased bilinear, which
torchvision's uint8 antialiased resize reproduces (0 or 1 grey level apart).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import DataError

# A 20000x20000 image is 400 MP; refuse decompression bombs by name rather than by OOM.
MAX_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(DataError):
    """Raised with the reason a file cannot be decoded (the caller adds the path).

    A :class:`~inspectnet.errors.DataError`: the CLI reports it as one line, exit status 1.
    """


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale the full range to 8 bits instead of clipping it to white.
        a = np.asarray(img, dtype=np.float32)
        hi = a.max() if a.size else 1.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))
        a = np.clip(a * scale, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite onto black, as the tray would be seen without the alpha channel.
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"))


EXIF_ORIENTATION = 0x0112


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF Orientation tag says (cameras store pixels as the sensor saw
    them and record the turn in the tag); the image itself when there is no turn to make."""
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return img  # a damaged EXIF block is no reason to lose the pixels
    if orientation in (None, 1):
        return img
    return ImageOps.exif_transpose(img)


def decode_pil(path: str | Path) -> np.ndarray:
    """Read ``path`` with Pillow as an ``(H, W, 3)`` uint8 array (no torch).

    Raises:
        DecodeError: with the decoder's reason (empty file, truncated, not an image, too big).
    """
    return _decode(path, None)


def decode_resized_pil(path: str | Path, size: int) -> np.ndarray:
    """``resize_pil(decode_pil(path), size)``, the same pixels, with two fewer copies: an
    8-bit photo is resized as the Pillow image it was decoded to (the predict path's
    decoding is a share of the cores that inference would otherwise have).

    Raises:
        DecodeError: as :func:`decode_pil`.
    """
    return _decode(path, size)


def _decode(path: str | Path, size: int | None) -> np.ndarray:
    p = Path(path)
    try:
        nbytes = p.stat().st_size
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror}") from None
    if nbytes == 0:
        raise DecodeError("file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise DecodeError(f"image is {w}x{h} = {w * h / 1e6:.0f} MP, over the {MAX_PIXELS / 1e6:.0f} MP limit")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)  # animated GIF/TIFF: the first frame is the photo
                img.load()
                img = upright(img)
                if size is not None and img.mode in ("RGB", "L"):
                    # Exactly what _to_rgb_array then resize_pil do to these modes.
                    rgb = img.convert("RGB")
                    if rgb.size != (size, size):
                        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
                    return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))
                arr = _to_rgb_array(img)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"image too large (decompression-bomb limit): {e}") from None
    except Image.UnidentifiedImageError:
        raise DecodeError("not an image file (no decoder recognises its content)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"corrupt or truncated image: {e}") from None
    return np.array(arr, copy=True) if size is None else resize_pil(arr, size)


def resize_pil(rgb: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 to ``(3, size, size)`` uint8, antialiased bilinear (as training resizes)."""
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))
