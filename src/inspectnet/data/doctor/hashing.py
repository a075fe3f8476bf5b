"""The 64-bit DCT perceptual hash (pHash) that the near-duplicate search compares."""

from __future__ import annotations

import numpy as np

HASH_SIDE = 32  # pHash: DCT of a 32x32 grey downscale, top-left 8x8 coefficients


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_DCT = _dct_matrix(HASH_SIDE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def phash(grey32: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 32x32 grey image (the classic pHash).

    Bit k is set where the k-th of the 8x8 lowest-frequency DCT coefficients exceeds their
    median: resizing, re-encoding, mild blur and brightness changes keep the hash within a
    few bits, while a different part or a different damage spot changes many.

    Args:
        grey32: A ``(32, 32)`` grey image, any numeric dtype.

    Returns:
        The hash as a Python int in ``0 .. 2**64 - 1``.
    """
    # Rounded so that coefficients that are zero in exact arithmetic (flat or ramp-like
    # images) compare equal instead of by float noise, which would flip bits at random.
    low = np.round((_DCT @ grey32.astype(np.float64) @ _DCT.T)[:8, :8].ravel(), 3)
    bits = low > np.median(low)
    return int((bits.astype(np.uint64) * _BIT_WEIGHTS).sum())


def hamming(a: int, b: int) -> int:
    """Number of bits in which two hashes differ.

    Args:
        a: A hash.
        b: Another hash.

    Returns:
        The Hamming distance, 0..64 for pHashes.
    """
    return (a ^ b).bit_count()
