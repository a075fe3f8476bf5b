"""One cheap read of every file, keeping a few numbers per file and never the pixels.

A thread pool (with a progress bar) reads each file once and keeps only a content hash, a
64-bit perceptual hash, a 16x16 grey thumbnail, size, mode and grey std, so memory grows
by a few hundred bytes per file, not by the pixels. JPEGs are decoded through Pillow's
``draft()`` (DCT scaling, up to 8x fewer pixels); everything else is decoded once in full,
which is also what proves the file is not truncated.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...progress import progress_iter
from ..decode import MAX_PIXELS
from ..sources import Sample
from .hashing import HASH_SIDE, phash

STD_SIDE = 256  # std is measured on at most this side: blank frames stay blank, noise stays noise
THUMB_SIDE = 16  # 256 bytes per image kept to confirm pHash matches (25 MB at 100k images)

# Magic bytes, the offset they sit at, and the format they announce.
_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),  # BigTIFF
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
]


def sniff(head: bytes) -> str | None:
    """The image format that a file's first bytes announce, or ``None``.

    Returns ``"TEXT"`` for content that is plain text (a CSV or HTML error page saved as .png
    is a common way to end up with an 'image' that is not one).

    Args:
        head: The first bytes of the file (32 are enough).

    Returns:
        A format name (``"PNG"``, ``"JPEG"``, ...), ``"TEXT"``, or ``None``.
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "WEBP" and not head.startswith(b"RIFF"):
                continue
            return name
    if head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return "TEXT"
    return None


@dataclass
class FileInfo:
    """What the doctor keeps of one file: numbers, never pixels."""

    index: int
    content: str = ""  # blake2b of the bytes (hex); "" when unreadable
    phash: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""  # what the content is (sniffed), whatever the extension says
    std: float = 0.0
    thumb: bytes = b""  # 16x16 grey, uint8
    error: str | None = None


def _grey_array(img: Image.Image) -> np.ndarray:
    """Grey float32 array of any Pillow mode, scaled to 0..255 like ``decode_image`` does."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode == "F":
            lo, hi = float(a.min()), float(a.max())
            return (a - lo) / (hi - lo + 1e-12) * 255.0
        hi = float(a.max()) if a.size else 1.0
        return a * (255.0 / (65535.0 if hi > 255 else max(hi, 1.0)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    return np.asarray(img.convert("L"), dtype=np.float32)


def inspect_file(path: Path, index: int = 0) -> FileInfo:
    """Read one file once: content hash, magic sniff, header, cheap decode, pHash, std.

    Never raises for a bad file: the reason goes into ``FileInfo.error``.

    Args:
        path: The file.
        index: Stored as ``FileInfo.index`` so results from a pool can be put back in order.

    Returns:
        The file's numbers; ``error`` is ``None`` when the image decoded.
    """
    info = FileInfo(index)
    try:
        data = path.read_bytes()
    except OSError as e:
        info.error = f"cannot read file: {e.strerror or e}"
        return info
    if not data:
        info.error = "file is empty (0 bytes)"
        return info
    info.content = hashlib.blake2b(data, digest_size=16).hexdigest()
    sniffed = sniff(data[:32])
    info.format = sniffed or ""
    if sniffed == "TEXT":
        preview = data[:40].decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
        info.error = f"not an image file: the content is text ({preview!r})"
        return info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                info.width, info.height = img.size
                info.mode = img.mode
                info.format = img.format or info.format
                if info.width * info.height > MAX_PIXELS:
                    info.error = (f"image is {info.width}x{info.height} = "
                                  f"{info.width * info.height / 1e6:.0f} MP, "
                                  f"over the {MAX_PIXELS / 1e6:.0f} MP limit")
                    return info
                if img.format == "JPEG":
                    # DCT-domain downscale: decodes every block (so truncation still shows)
                    # at 1/2..1/8 size.
                    img.draft(img.mode if img.mode in ("L", "RGB") else None, (STD_SIDE, STD_SIDE))
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()
                reducible = img.mode in ("L", "RGB", "RGBA", "LA", "I", "F")
                if max(img.size) >= 2 * STD_SIDE and reducible:
                    img = img.reduce(max(img.size) // STD_SIDE)  # box average: keeps blank blank
                grey = _grey_array(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        info.error = f"image too large (decompression-bomb limit): {e}"
        return info
    except Image.UnidentifiedImageError:
        what = f"{sniffed} signature but " if sniffed else ""
        info.error = f"not an image file ({what}no decoder recognises its content)"
        return info
    except (OSError, SyntaxError, ValueError) as e:
        info.error = f"corrupt or truncated image: {e}"
        return info
    info.std = float(grey.std())
    grey_img = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))
    small = grey_img.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    info.phash = phash(np.asarray(small))
    thumb = small.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    info.thumb = np.clip(np.asarray(thumb) + 0.5, 0, 255).astype(np.uint8).tobytes()
    return info


def scan_files(samples: list[Sample], workers: int | None = None,
               progress: bool = True) -> list[FileInfo]:
    """:func:`inspect_file` on every sample, on a thread pool.

    Args:
        samples: The files to read.
        workers: Threads (default: 2x the cores, at most 8; decoding releases the GIL).
        progress: Show a progress bar.

    Returns:
        One :class:`FileInfo` per sample, in the order of ``samples``.
    """
    n = len(samples)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    infos: list[FileInfo] = [FileInfo(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda i: inspect_file(samples[i].path, i), range(n), chunksize=16)
        for fi in progress_iter(results, total=n, desc="doctor", enabled=progress):
            infos[fi.index] = fi
    return infos
