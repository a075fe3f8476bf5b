"""The course's hand-made convolution explorer: classic 3x3 kernels applied to a photo.

Before a CNN learns its own filters, the course shows what fixed ones do: a Laplacian
finds outlines, Sobel finds horizontal or vertical edges, a box or Gaussian kernel blurs.
:func:`convolve2d` is the same operation a ``Conv2d`` layer performs, a cross-correlation
(the kernel is *not* flipped), with stride and "valid"/"same" padding, so the numbers a
student works out by hand on the board are the numbers this module prints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = [
    "KERNELS",
    "KernelError",
    "convolve2d",
    "convolve_panel",
    "format_matrix",
    "load_image_gray",
    "load_kernel",
]


class KernelError(ConfigError, ValueError):
    """A kernel name or kernel file cannot be used.

    A ``ValueError`` for Python callers, an ``InspectnetError`` so the CLI prints one line.
    """


# The classic kernels, as the image-kernel lessons write them. Sobel-H has its weights on
# the top and bottom rows: it measures the vertical change of brightness, so it lights up
# on *horizontal* edges (and Sobel-V, its transpose, on vertical ones).
KERNELS: dict[str, np.ndarray] = {
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "sobel-h": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "sobel-v": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    "box": np.full((3, 3), 1.0 / 9.0),
    "gaussian": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 16.0,
}
for _k in KERNELS.values():
    _k.flags.writeable = False  # shared module state: a caller must not edit it in place
del _k


def load_kernel(name_or_file: str | Path | np.ndarray) -> np.ndarray:
    """Return a kernel by name (see :data:`KERNELS`) or read one from a text file.

    The file holds one row per line, numbers separated by whitespace or commas; blank
    lines and ``#`` comments are ignored. Any rectangular shape is allowed (3x3, 5x5, 1x3...).

    Args:
        name_or_file: A key of :data:`KERNELS` (case-insensitive), a path to a kernel text
            file, or an array (returned as a float copy after checking it is 2-D).

    Returns:
        A float64 array of shape ``(kh, kw)``.

    Raises:
        KernelError: (a ``ValueError``) unknown name, missing file, empty file, a value
            that is not a number, or rows of different lengths; the message names the file.
    """
    if isinstance(name_or_file, np.ndarray):
        k = np.asarray(name_or_file, dtype=np.float64)
        if k.ndim != 2 or k.size == 0:
            raise KernelError(f"a kernel must be a non-empty 2-D array, got shape {k.shape}")
        return k.copy()
    key = str(name_or_file).strip().lower()
    if key in KERNELS:
        return KERNELS[key].copy()
    path = Path(name_or_file)
    if not path.is_file():
        raise KernelError(
            f"kernel {str(name_or_file)!r} is neither a known kernel "
            f"({', '.join(KERNELS)}) nor an existing file"
        )
    rows: list[list[float]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c for c in re.split(r"[,\s]+", line) if c]
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise KernelError(
                f"kernel file {path}: line {lineno} holds {bad!r}, which is not a number"
            ) from None
    if not rows:
        raise KernelError(f"kernel file {path} is empty: expected rows of numbers")
    widths = sorted({len(r) for r in rows})
    if len(widths) > 1:
        raise KernelError(
            f"kernel file {path} has ragged rows (lengths {widths}): every row needs the "
            "same number of values"
        )
    k = np.array(rows, dtype=np.float64)
    if not np.all(np.isfinite(k)):
        raise KernelError(f"kernel file {path} holds inf or nan: only finite numbers are allowed")
    return k


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def convolve2d(
    image: np.ndarray,
    kernel: np.ndarray | str,
    stride: int = 1,
    padding: str = "valid",
) -> np.ndarray:
    """Slide ``kernel`` over a 2-D image: the cross-correlation a CNN layer computes.

    Output pixel ``(i, j)`` is ``sum(window * kernel)`` for the window whose top-left
    corner is at ``(i * stride, j * stride)`` of the (padded) image; the kernel is not
    flipped, exactly as in ``torch.nn.Conv2d`` and the course's worked example.

    Args:
        image: ``(H, W)`` array (any real dtype; computed in float64).
        kernel: ``(kh, kw)`` array, or a kernel name / file for :func:`load_kernel`.
        stride: Step between windows, >= 1.
        padding: ``"valid"`` (no padding: output ``(H - kh) // stride + 1``) or ``"same"``
            (zero padding as TensorFlow does: output ``ceil(H / stride)``, which is the
            input size at stride 1; the extra pad goes to the bottom/right when odd).

    Returns:
        The float64 feature map.

    Raises:
        ValueError: a non-2-D image, a bad stride or padding, or a kernel larger than a
            "valid" input.
    """
    k = load_kernel(kernel) if isinstance(kernel, (str, Path)) else load_kernel(np.asarray(kernel))
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"convolve2d needs a 2-D (H, W) image, got shape {img.shape}")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    kh, kw = k.shape
    if padding == "same":
        pads = []
        for size, ks in ((img.shape[0], kh), (img.shape[1], kw)):
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + ks - size, 0)
            pads.append((total // 2, total - total // 2))
        img = np.pad(img, pads)
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
    if img.shape[0] < kh or img.shape[1] < kw:
        raise ValueError(f"kernel {k.shape} is larger than the image {img.shape} ('valid' padding)")
    # All windows at stride 1 as a view (no copy), then keep every stride-th one.
    windows = np.lib.stride_tricks.sliding_window_view(img, (kh, kw))[::stride, ::stride]
    return np.einsum("ijkl,kl->ij", windows, k)


def format_matrix(m: np.ndarray, decimals: int = 3) -> str:
    """Render a small matrix as aligned text, integers without decimals.

    Args:
        m: A 1-D or 2-D array.
        decimals: Digits after the point when some value is not a whole number.

    Returns:
        One line per row, e.g. ``"[4 3 4]\\n[2 4 3]\\n[2 3 4]"``.
    """
    a = np.atleast_2d(np.asarray(m, dtype=np.float64))
    if a.ndim != 2:
        raise ValueError(f"format_matrix needs a 1-D or 2-D array, got shape {a.shape}")
    whole = np.all(np.isfinite(a)) and np.allclose(a, np.round(a))
    # "+ 0.0" turns -0.0 into 0.0 so that a zero never prints with a sign.
    cells = [[f"{v + 0.0:.0f}" if whole else f"{v + 0.0:.{decimals}f}" for v in row] for row in a]
    width = max((len(c) for row in cells for c in row), default=0)
    return "\n".join("[" + " ".join(c.rjust(width) for c in row) + "]" for row in cells)


def load_image_gray(path: str | Path) -> np.ndarray:
    """Read any image file as a float ``(H, W)`` array in [0, 1] (16-bit images keep depth).

    Raises:
        KernelError: the file is missing or cannot be decoded (the message names it).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1e-12)
                return np.clip(arr / top, 0.0, 1.0)
            return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise KernelError(f"cannot read image {path}: {exc}") from None


def convolve_panel(
    image_path: str | Path,
    kernels: Sequence[str | Path],
    out_png: str | Path,
    stride: int = 1,
    padding: str = "same",
) -> Path:
    """Draw the input photo, each kernel with its numbers, and what each kernel makes of it.

    Layout: one column per kernel plus one for the input; the top row shows the input and
    the kernels as annotated matrices, the bottom row the grey-level outputs (each scaled
    to its own min..max, with the range in the title so that signs are not lost).

    Args:
        image_path: Any image file; it is converted to grayscale.
        kernels: Kernel names (see :data:`KERNELS`) or kernel files.
        out_png: Where to write the PNG (folders are created; written atomically).
        stride: Stride for every kernel.
        padding: ``"same"`` or ``"valid"``.

    Returns:
        The path written.

    Raises:
        KernelError: a bad kernel or image; ValueError: bad stride or padding.
    """
    # A bare Figure renders with Agg and touches no pyplot state: headless, thread-safe,
    # and it leaves a notebook user's backend alone.
    from matplotlib.figure import Figure

    from ..io import atomic_write

    if not kernels:
        raise KernelError("convolve_panel needs at least one kernel")
    img = load_image_gray(image_path)
    named = [(_kernel_label(k), load_kernel(k)) for k in kernels]
    outs = [convolve2d(img, k, stride=stride, padding=padding) for _, k in named]

    n = len(named) + 1
    fig = Figure(figsize=(2.8 * n, 5.8))
    axes = fig.subplots(2, n, squeeze=False)
    axes[0, 0].imshow(img, cmap="gray", vmin=0.0, vmax=1.0)
    axes[0, 0].set_title(f"input {img.shape[1]}x{img.shape[0]}", fontsize=9)
    axes[1, 0].axis("off")
    axes[1, 0].text(
        0.0,
        0.5,
        f"stride {stride}\npadding {padding!r}",
        fontsize=9,
        transform=axes[1, 0].transAxes,
    )
    for col, ((name, k), out) in enumerate(zip(named, outs), start=1):
        _draw_kernel(axes[0, col], k)
        axes[0, col].set_title(name, fontsize=9)
        axes[1, col].imshow(out, cmap="gray")
        axes[1, col].set_title(
            f"{out.shape[1]}x{out.shape[0]}  [{out.min():.2g}, {out.max():.2g}]", fontsize=8
        )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return atomic_write(out_png, lambda p: fig.savefig(p, format="png", dpi=100))


def _kernel_label(k: str | Path) -> str:
    key = str(k).strip().lower()
    return key if key in KERNELS else Path(k).stem


def _draw_kernel(ax, k: np.ndarray) -> None:
    """A kernel as a coloured matrix (blue negative, red positive) with its values written."""
    lim = float(np.abs(k).max()) or 1.0
    ax.imshow(k, cmap="coolwarm", vmin=-lim, vmax=lim)
    if k.size <= 49:  # numbers stop being readable beyond 7x7
        for (i, j), v in np.ndenumerate(k):
            txt = f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9 if k.shape[0] <= 3 else 7)
