"""What ``predict`` is given: files, folders and globs, expanded to a list of image files."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from ..data.sources import IMAGE_EXTENSIONS
from ..errors import DataError


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), globs expanded; sorted
    within each item, duplicates dropped, order of the items kept."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*")
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            found = [p]
        elif any(ch in s for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
        else:
            raise DataError(f"{s} is not a file, folder or glob that matches anything")
        for q in found:
            if q not in seen:
                seen.add(q)
                out.append(q)
    if not out:
        raise DataError("no images found in the given inputs")
    return out
