"""Decode any image file into a 3-channel uint8 tensor, or say exactly why it cannot be.

8-bit grey and RGB PNGs (what inspection cameras and our generator write) go through
torchvision's libpng decoder, which holds no GIL: on the decoding thread pool it is the
first epoch's largest cost, and this path decodes a 600-image set in 0.40 s where Pillow
took 0.61-0.78 s on 2 cores (the same pixels, checked by the tests). Pillow covers the rest
(JPEG, TIFF, BMP, WebP, 16-bit, palette, alpha) and explains every failure. Every mode
(L, RGB, RGBA, P, I;16, CMYK) ends as RGB. A camera's EXIF Orientation tag is applied, so a
phone photo taken upright is upright for training and prediction alike.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import torch
from PIL import Image  # noqa: F401 - tests and callers reach Pillow through this module

from .pixels import (  # noqa: F401 - re-exported: DecodeError and the limits live in pixels.py
    EXIF_ORIENTATION, MAX_PIXELS, DecodeError, _to_rgb_array, decode_pil, upright)

# torchvision 0.29 warns on every decode that its decoders will move to TorchCodec; the PNG
# path below falls back to Pillow when they do, so the per-image warning says nothing new.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_fast(p: Path) -> torch.Tensor | None:
    """An 8-bit grey or RGB PNG as ``(3, H, W)`` uint8 through torchvision's libpng, or None
    for anything else (palette, alpha, 16-bit, corrupt, over the pixel limit): Pillow then
    decodes it or says what is wrong."""
    try:
        with open(p, "rb") as f:
            head = f.read(26)
            # Signature, IHDR, width, height, bit depth, colour type (0 grey, 2 RGB).
            if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
                return None
            w, h = struct.unpack(">II", head[16:24])
            if head[24] != 8 or head[25] not in (0, 2) or w * h > MAX_PIXELS:
                return None
            data = head + f.read()
    except OSError:
        return None
    if b"eXIf" in data:
        return None  # an EXIF chunk may turn the image: Pillow applies it (rare in PNGs)
    try:
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:  # deprecated since torchvision 0.29: gone one day, Pillow stays
        return None
    try:
        x = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except RuntimeError:
        return None
    if x.dtype != torch.uint8 or x.shape[0] not in (1, 3) or x.shape[1:] != (h, w):
        return None  # e.g. a tRNS chunk turned into an alpha channel: Pillow's compositing rule
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x.contiguous()


def decode_image(path: str | Path) -> torch.Tensor:
    """Read ``path`` as a ``(3, H, W)`` uint8 tensor.

    Raises:
        DecodeError: with the decoder's reason (empty file, truncated, not an image, too big).
    """
    p = Path(path)
    # A file the fast path cannot take (missing, empty, not an 8-bit grey/RGB PNG) goes to
    # Pillow, whose checks give the reason (decode_pil).
    fast = _png_fast(p)
    return fast if fast is not None else _decode_pillow(p)


def _decode_pillow(p: Path) -> torch.Tensor:
    return torch.from_numpy(decode_pil(p)).permute(2, 0, 1).contiguous()


def resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``(3, H, W)`` uint8 image to ``(3, size, size)`` with antialiasing."""
    if img.shape[-2:] == (size, size):
        return img
    from torchvision.transforms.v2 import functional as F

    return F.resize(img, [size, size], antialias=True)


def load_resized(path: str | Path, size: int) -> torch.Tensor:
    """Decode (:func:`decode_image`), then resize with antialiasing to ``size`` x ``size``."""
    return resize_uint8(decode_image(path), size)
