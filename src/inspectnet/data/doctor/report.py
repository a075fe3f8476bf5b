"""The doctor's report: its findings ranked by harm, and their rendering as tables, JSON and CSV.

Findings are ranked by the harm they do to the numbers a user will read: a copy of a test
image in train (leakage) and the same picture under two labels (conflicting labels) first,
because they make every metric a lie; unreadable files next, because training stops on
them; then duplicates, imbalance, tiny and blank images, and files whose extension does not
match their content.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..sources import SPLITS
from .files import CONSTANT_STD, MIN_SIDE
from .labels import IMBALANCE_WARN

# Order of harm: what makes the reported numbers false, then what stops training, then what
# wastes data or misleads the model.
HARM_ORDER = ("leakage", "group_leakage", "conflicting_labels", "unreadable", "single_class", "duplicates",
              "near_duplicates", "name_groups", "imbalance", "constant_images", "small_images",
              "extension_mismatch", "ignored_files")


@dataclass
class Report:
    """The doctor's findings; ``to_dict()`` is the JSON written by ``--json``."""

    root: str
    n_files: int
    n_readable: int
    classes: dict[str, int]
    splits: dict[str, dict[str, int]]
    imbalance_ratio: float | None
    sizes: dict[str, Any]
    modes: dict[str, int]
    unreadable: list[dict[str, str]] = field(default_factory=list)
    extension_mismatch: list[dict[str, str]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    exact_duplicates: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    small_images: list[dict[str, Any]] = field(default_factory=list)
    constant_images: list[dict[str, Any]] = field(default_factory=list)
    group_leakage: list[dict[str, Any]] = field(default_factory=list)  # {"group", "splits"}
    name_groups: list[dict[str, Any]] = field(default_factory=list)  # {"stem", "files"}, when warned
    name_group_hint: str | None = None  # the warning, when names suggest groups and none are given
    problems: list[dict[str, Any]] = field(default_factory=list)  # ordered by harm, worst first
    verdict: str = "OK"
    near_threshold: int = 4
    hash_bands: int = 5
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``ok``: plain data, ready for JSON."""
        d = asdict(self)
        d["ok"] = self.ok
        return d


def rank_problems(rep: Report, has_split: bool) -> list[dict[str, Any]]:
    """The findings of a filled-in report as ``{"kind", "count", "message"}``, worst first.

    Args:
        rep: The report, every finding list filled in.
        has_split: Whether the data comes split; without a split, duplicates get a hint that
            the random split may put copies on both sides.

    Returns:
        One entry per kind found, in :data:`HARM_ORDER`.
    """
    found: dict[str, dict[str, Any]] = {}

    def add(kind: str, count: int, message: str) -> None:
        if count:
            found[kind] = {"kind": kind, "count": count, "message": message}

    leak_exact = sum("leakage" in g["kinds"] for g in rep.exact_duplicates)
    leak_near = sum("leakage" in p["kinds"] for p in rep.near_duplicates)
    add("leakage", leak_exact + leak_near,
        f"leakage: {leak_exact} identical and {leak_near} near-identical image group(s) sit in "
        "more than one split (test scores would be inflated)")
    add("group_leakage", len(rep.group_leakage),
        f"group leakage: {len(rep.group_leakage)} group(s) of the group column sit in more than one split "
        "(photos of one part in train and test inflate the test score)")
    conf_exact = sum("conflicting_labels" in g["kinds"] for g in rep.exact_duplicates)
    conf_near = sum("conflicting_labels" in p["kinds"] for p in rep.near_duplicates)
    add("conflicting_labels", conf_exact + conf_near,
        f"conflicting labels: {conf_exact} identical and {conf_near} near-identical image "
        "group(s) carry different labels")
    add("unreadable", len(rep.unreadable),
        f"{len(rep.unreadable)} unreadable file(s) (training stops on them)")
    if len(rep.classes) < 2:
        add("single_class", 1,
            f"only one class ({', '.join(rep.classes)}); a classifier needs at least two")
    within = [g for g in rep.exact_duplicates if g["kinds"] == ["within_class"]]
    extra = sum(len(g["files"]) - 1 for g in within)
    hint = "" if has_split else " (the random split may put copies in train and test)"
    add("duplicates", len(within), f"{len(within)} group(s) of identical files in the same class "
                                   f"({extra} redundant copies){hint}")
    near_within = sum(p["kinds"] == ["within_class"] for p in rep.near_duplicates)
    add("near_duplicates", near_within,
        f"{near_within} near-duplicate pair(s) in the same class{hint}")
    if rep.name_group_hint:
        add("name_groups", len(rep.name_groups), rep.name_group_hint)
    if rep.imbalance_ratio is not None and rep.imbalance_ratio >= IMBALANCE_WARN:
        add("imbalance", 1, f"class imbalance {rep.imbalance_ratio:.1f}:1 "
                            "(read balanced accuracy and recall, not accuracy)")
    add("constant_images", len(rep.constant_images),
        f"{len(rep.constant_images)} almost constant image(s) (grey std < {CONSTANT_STD:g})")
    add("small_images", len(rep.small_images),
        f"{len(rep.small_images)} image(s) smaller than {MIN_SIDE} px")
    add("extension_mismatch", len(rep.extension_mismatch),
        f"{len(rep.extension_mismatch)} file(s) whose extension does not match their content")
    suffixes = sorted({Path(p).suffix.lower() or "(none)" for p in rep.ignored_files})
    add("ignored_files", len(rep.ignored_files),
        f"{len(rep.ignored_files)} file(s) with extensions training does not read "
        f"({', '.join(suffixes)})")
    return [found[k] for k in HARM_ORDER if k in found]


def verdict_line(rep: Report) -> str:
    """One line: ``OK: ...`` with the data set's size, or ``PROBLEMS: `` and every finding."""
    if not rep.problems:
        return f"OK: {rep.n_files} images, {len(rep.classes)} classes, no problems found"
    return "PROBLEMS: " + "; ".join(p["message"] for p in rep.problems)


def _examples(rep: Report, kind: str, limit: int = 3) -> list[str]:
    """A few concrete files for a finding, so the table says where to look."""
    def pair(p: dict[str, Any]) -> str:
        a, b = p["a"], p["b"]
        return (f"{a['path']} ({a['split'] or a['label']}) ~ "
                f"{b['path']} ({b['split'] or b['label']})")

    def group(g: dict[str, Any]) -> str:
        return " = ".join(f"{f['path']} ({f['split'] or f['label']})" for f in g["files"][:3])

    if kind in ("leakage", "conflicting_labels"):
        ex = [group(g) for g in rep.exact_duplicates if kind in g["kinds"]]
        ex += [pair(p) for p in rep.near_duplicates if kind in p["kinds"]]
    elif kind == "duplicates":
        ex = [group(g) for g in rep.exact_duplicates if g["kinds"] == ["within_class"]]
    elif kind == "group_leakage":
        ex = [f"group {g['group']!r} in {', '.join(g['splits'])}" for g in rep.group_leakage]
    elif kind == "name_groups":
        ex = [" + ".join(g["files"][:3]) for g in rep.name_groups]
    elif kind == "near_duplicates":
        ex = [pair(p) for p in rep.near_duplicates if p["kinds"] == ["within_class"]]
    elif kind in ("unreadable", "extension_mismatch"):
        ex = [f"{u['path']}: {u['reason']}" for u in getattr(rep, kind)]
    elif kind == "constant_images":
        ex = [f"{c['path']} (std {c['std']})" for c in rep.constant_images]
    elif kind == "small_images":
        ex = [f"{c['path']} ({c['size']})" for c in rep.small_images]
    elif kind == "ignored_files":
        ex = list(rep.ignored_files)
    else:
        ex = []
    return ex[:limit] + ([f"... {len(ex) - limit} more"] if len(ex) > limit else [])


def doctor_tables(rep: Report) -> list[Any]:
    """Rich tables for the terminal: the data set at a glance, then the findings worst first.

    Args:
        rep: The report.

    Returns:
        ``rich.table.Table`` objects, to print in order.
    """
    from rich.table import Table

    t = Table(title=f"inspectnet doctor · {rep.root}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("files", f"{rep.n_files} ({rep.n_readable} readable)")
    t.add_row("classes", ", ".join(f"{c}={k}" for c, k in rep.classes.items())
              + (f"  (imbalance {rep.imbalance_ratio:.2f}:1)" if rep.imbalance_ratio else ""))
    for sp, c in rep.splits.items():
        t.add_row(f"  {sp}", ", ".join(f"{k}={v}" for k, v in c.items()))
    sz = rep.sizes
    if sz.get("width"):
        t.add_row("sizes", f"{sz['distinct']} distinct; "
                           f"width {sz['width']['min']}-{sz['width']['max']}, "
                           f"height {sz['height']['min']}-{sz['height']['max']}; most common "
                           + ", ".join(f"{k} ({v})" for k, v in sz["most_common"].items()))
    t.add_row("modes", ", ".join(f"{m} ({k})" for m, k in rep.modes.items()) or "-")
    t.add_row("near-duplicates",
              f"pHash Hamming <= {rep.near_threshold} ({rep.hash_bands} bands), "
              "confirmed on thumbnails")
    tables = [t]
    if rep.problems:
        f = Table(title="findings, worst first")
        f.add_column("#", justify="right")
        f.add_column("problem", style="red")
        f.add_column("count", justify="right")
        f.add_column("examples", overflow="fold")
        for i, p in enumerate(rep.problems, 1):
            f.add_row(str(i), p["kind"].replace("_", " "), str(p["count"]),
                      "\n".join(_examples(rep, p["kind"])))
        tables.append(f)
    return tables


def _fix_rows(rep: Report) -> list[list[str]]:
    """``[path, issue, detail, action]`` per file to act on, worst kind of finding first."""
    order = {s: i for i, s in enumerate(SPLITS)}
    rows: list[list[str]] = []
    for u in rep.unreadable:
        rows.append([u["path"], "unreadable", u["reason"], "replace with a good copy or remove"])
    for g in rep.exact_duplicates:
        files = sorted(g["files"], key=lambda f: (order.get(f["split"], 9), f["path"]))
        keep = files[0]
        for f in files[1:]:
            if "conflicting_labels" in g["kinds"]:
                action = (f"decide the true label (here {f['label']!r}, {keep['path']} says "
                          f"{keep['label']!r}); keep one")
            elif "leakage" in g["kinds"]:
                action = f"remove: identical to {keep['path']} in split {keep['split']}"
            else:
                action = f"remove: identical to {keep['path']}"
            rows.append([f["path"], "+".join(g["kinds"]), f"identical to {keep['path']}", action])
    for p in rep.near_duplicates:
        a, b = p["a"], p["b"]
        if "conflicting_labels" in p["kinds"]:
            action = f"check the labels ({a['label']!r} vs {b['label']!r})"
        elif "leakage" in p["kinds"]:
            action = f"move into the same split as {a['path']} ({a['split']}) or remove"
        else:
            action = "review: likely the same part photographed twice"
        rows.append([b["path"], "near_duplicate:" + "+".join(p["kinds"]),
                     f"pHash distance {p['distance']} to {a['path']}", action])
    for g in rep.group_leakage:
        rows.append([g["group"], "group_leakage", f"group in {', '.join(g['splits'])}",
                     "move every image of the group into one split"])
    for m in rep.extension_mismatch:
        rows.append([m["path"], "extension_mismatch", m["reason"], "rename to the right extension"])
    for c in rep.constant_images:
        rows.append([c["path"], "constant_image", f"grey std {c['std']}", "check: blank frame?"])
    for s in rep.small_images:
        rows.append([s["path"], "small_image", s["size"], "check: thumbnail or crop?"])
    for f in rep.ignored_files:
        rows.append([f, "ignored_file", "extension not read by training",
                     "convert to PNG/JPEG or remove"])
    return rows


def write_fix_report(rep: Report, path: str | Path) -> Path:
    """A CSV of one line per file to act on: ``path,issue,detail,action``.

    For duplicate groups the first file (sorted by split order then path) is kept and the
    others are listed, so the list can be fed straight to a clean-up script after review.

    Args:
        rep: The report.
        path: Where to write the CSV (atomically).

    Returns:
        The path written.
    """
    from ...io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "issue", "detail", "action"])
    w.writerows(_fix_rows(rep))
    return atomic_write_text(path, buf.getvalue())
