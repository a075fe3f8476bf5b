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

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..errors import DataError

# A 20000x20000 image is 400 MP; refuse decompression bombs by name rather than by OOM.
MAX_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False
# torchvision 0.29 warns on every decode that its decoders will move to TorchCodec; the PNG
# path below falls back to Pillow when they do, so the per-image warning says nothing new.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


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
    try:
        size = p.stat().st_size
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror}") from None
    if size == 0:
        raise DecodeError("file is empty (0 bytes)")
    fast = _png_fast(p)
    return fast if fast is not None else _decode_pillow(p)


def _decode_pillow(p: Path) -> torch.Tensor:
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
                arr = _to_rgb_array(upright(img))
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"image too large (decompression-bomb limit): {e}") from None
    except Image.UnidentifiedImageError:
        raise DecodeError("not an image file (no decoder recognises its content)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DecodeError(f"corrupt or truncated image: {e}") from None
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).contiguous()


def resize_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a ``(3, H, W)`` uint8 image to ``(3, size, size)`` with antialiasing."""
    if img.shape[-2:] == (size, size):
        return img
    from torchvision.transforms.v2 import functional as F

    return F.resize(img, [size, size], antialias=True)


def load_resized(path: str | Path, size: int) -> torch.Tensor:
    """Decode (:func:`decode_image`), then resize with antialiasing to ``size`` x ``size``."""
    return resize_uint8(decode_image(path), size)
