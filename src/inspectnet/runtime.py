"""Process-level tuning that pays on these CPUs: keep big tensors off mmap.

glibc serves every allocation above 32 MB (the activations of a batch of 32 at 224 px)
with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each training or
inference step faults in hundreds of thousands of zeroed pages: we measured 461k minor
page faults per batch-32 EfficientNet-Lite0 forward pass and half the CPU time in the
kernel. Telling malloc never to use mmap and never to trim the heap makes the second step
reuse the first one's memory: about 0 faults per batch (``bench/alloc_faults.py``).

The cost: freed memory stays with the process (RSS holds at its peak). That suits a
training or serving process; set ``INSPECTNET_MALLOC=default`` to opt out.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def tune_allocator() -> bool:
    """Apply the malloc settings once per process (glibc only). Returns True if applied."""
    global _done
    if _done:
        return True
    if os.environ.get("INSPECTNET_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    _done = ok
    return ok
