"""Predict over large folders: output files written as results arrive, resume, shards.

The pieces the ``predict`` command composes:

- :func:`parse_shard` / :func:`shard_paths` split the *sorted* input list round-robin, so
  ``n`` jobs given ``--shard 1/n`` ... ``--shard n/n`` cover every file exactly once
  whatever order the inputs were given in;
- :class:`ResultWriter` appends CSV or JSON-lines rows and flushes each one, so an
  interrupted run keeps every row it reported; on ``resume`` it first reads the rows
  already there (dropping a half-written last line) and :func:`run_predictions` skips
  those paths;
- :func:`run_predictions` streams a predictor over the remaining paths, optionally saving
  Grad-CAM overlays (torch engine), and yields each row once it is on disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError
from ..io import make_dir, storage_error
from ..station import RowPredictor

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1-based, as in pytest-shard or Playwright) to ``(i, n)``; None passes through.

    Raises:
        ConfigError: not of the form ``i/n`` with ``1 <= i <= n``.
    """
    if spec is None or spec == "":
        return None
    try:
        a, b = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {spec!r}: expected i/n, e.g. 1/4 "
                          "(shards are numbered 1..n)") from None
    if b < 1 or not 1 <= a <= b:
        m = max(b, 1)
        raise ConfigError(f"--shard {spec!r}: need 1 <= i <= n, e.g. 1/{m} ... {m}/{m}")
    return a, b


def shard_paths(paths: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    """The ``i``-th of ``n`` round-robin slices of the sorted paths (all, as given, when None).

    Sorting first makes the split independent of how the inputs were listed; round-robin
    keeps the shards within one file of each other in size.
    """
    if shard is None:
        return list(paths)
    ordered = sorted(paths, key=str)
    i, n = shard
    return ordered[i - 1 :: n]


def output_format(path: str | Path) -> str:
    """``csv`` or ``jsonl`` from the output file's suffix.

    Raises:
        ConfigError: any other suffix.
    """
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--output {path}: use a .csv or .jsonl file "
                          f"(got suffix {Path(path).suffix!r})")
    return fmt


def csv_header(positive_class: str) -> list[str]:
    return ["path", "verdict", "probability", f"p_{positive_class}", "review_reason", "error"]


def csv_row(r: dict[str, Any], positive_class: str) -> list[str]:
    """One result as CSV cells; empty cells where a file could not be read."""

    def num(v: Any) -> str:
        return "" if v is None else f"{v:.6f}"

    review = r.get("review_reason") or ""
    return [r["path"], r.get("verdict") or "", num(r.get("probability")),
            num(r.get(f"p_{positive_class}")), review, r.get("error") or ""]


def _complete_prefix(path: Path) -> int:
    """Byte length of the file up to its last newline: a half-written row is not a row."""
    data = path.read_bytes()
    cut = data.rfind(b"\n")
    return cut + 1 if cut >= 0 else 0


class ResultWriter:
    """Append result rows to a CSV or JSON-lines file, one flush per row.

    Args:
        path: Output file (``.csv`` or ``.jsonl``).
        positive_class: Names the ``p_<class>`` column of the CSV.
        resume: Keep the rows already in the file (see :attr:`done`) and append after them;
            without it an existing file is an error unless ``overwrite``.
        overwrite: Start the file afresh.

    Raises:
        ConfigError: an unknown suffix, an existing file without ``resume``/``overwrite``,
            or a CSV whose header does not match this run's.
    """

    def __init__(self, path: str | Path, positive_class: str, resume: bool = False,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        self.fmt = output_format(self.path)
        self.positive_class = positive_class
        self.done: set[str] = set()
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not (resume or overwrite):
            raise ConfigError(f"--output {self.path} already exists; pass --resume to continue it "
                              "or --overwrite to start again")
        make_dir(self.path.parent)
        try:
            self._open(exists and resume)
        except OSError as e:
            raise storage_error(e, self.path) from None

    def _open(self, resume: bool) -> None:
        if resume:
            keep = _complete_prefix(self.path)
            with open(self.path, "r+b") as f:
                f.truncate(keep)  # drop a row cut off by the interruption
            self.done = self._read_done()
            self._f: IO[str] = open(self.path, "a", encoding="utf-8", newline="")
            if keep == 0 and self.fmt == "csv":
                self._write_line(csv_header(self.positive_class))
        else:
            self._f = open(self.path, "w", encoding="utf-8", newline="")
            if self.fmt == "csv":
                self._write_line(csv_header(self.positive_class))

    def _read_done(self) -> set[str]:
        done: set[str] = set()
        with open(self.path, encoding="utf-8", newline="") as f:
            if self.fmt == "csv":
                reader = csv.reader(f)
                header = next(reader, None)
                if header is not None and header != csv_header(self.positive_class):
                    raise ConfigError(f"--resume: {self.path} has columns {header}, not this "
                                      f"run's {csv_header(self.positive_class)}; "
                                      "is it from another model?")
                done.update(row[0] for row in reader if row)
            else:
                for line in f:
                    line = line.strip()
                    if line:
                        try:
                            done.add(json.loads(line)["path"])
                        except (json.JSONDecodeError, KeyError, TypeError):
                            raise ConfigError(f"--resume: {self.path} has a line that is not "
                                              f"a result row: {line[:80]!r}") from None
        return done

    def _write_line(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        self._f.write(buf.getvalue())
        self._f.flush()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and flush it to the OS (it survives the process being killed).

        Raises:
            StorageError: the file cannot be written (full disk...); the rows before stay,
                and ``--resume`` drops a half-written last line.
        """
        try:
            if self.fmt == "csv":
                self._write_line(csv_row(row, self.positive_class))
            else:
                self._f.write(json_line(row))
                self._f.flush()
        except OSError as e:
            raise storage_error(e, self.path) from None
        self.done.add(row["path"])

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.flush()
                os.fsync(self._f.fileno())
            except OSError as e:
                raise storage_error(e, self.path) from None
            finally:
                try:
                    self._f.close()
                except OSError:
                    pass  # the flush above already said why

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_line(row: dict[str, Any]) -> str:
    """One result as a JSON line. Strict JSON: a NaN that slipped through raises instead of
    writing a token no JSON reader accepts (rows carry ``None`` where there is no number)."""
    return json.dumps(row, allow_nan=False) + "\n"


def cam_filename(path: Path, taken: set[str]) -> str:
    """``<stem>.png``, or ``<stem>-<hash>.png`` when two inputs share a stem (folders)."""
    name = f"{path.stem}.png"
    if name in taken:
        name = f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}.png"
    taken.add(name)
    return name


def run_predictions(pred: RowPredictor, paths: list[Path], *, batch_size: int = 32,
                    writer: ResultWriter | None = None, cam_dir: str | Path | None = None,
                    progress: bool = False, workers: int = 2) -> Iterator[dict[str, Any]]:
    """Classify ``paths`` (minus those ``writer.done`` already holds) and yield each row.

    Rows are written to ``writer`` before they are yielded, so whatever the caller has seen
    is on disk.

    Args:
        pred: Any predictor (torch or ONNX).
        paths: Files, e.g. from ``shard_paths(expand_inputs(...))``.
        batch_size: Images per forward pass.
        writer: Optional output file.
        cam_dir: Write a Grad-CAM overlay per image there (``<stem>.png``); torch engine
            only. Rows then carry a ``cam`` path.
        progress: Show a rich progress bar on stderr.
        workers: Decoding threads.

    Raises:
        ConfigError: ``cam_dir`` with an engine that cannot explain (a usage error).
        StorageError: ``cam_dir`` or the output file cannot be written.
    """
    todo = [p for p in paths if writer is None or str(p) not in writer.done]
    if cam_dir is not None:
        if not pred.can_explain:
            raise ConfigError("--cam needs the torch engine (Grad-CAM needs gradients); "
                              f"this predictor uses {pred.engine}: pass --engine torch")
        cam_dir = make_dir(cam_dir)
    taken: set[str] = set()
    bar = _Bar(len(todo), len(paths) - len(todo)) if progress else None
    try:
        for batch in pred.predict_batches(todo, batch_size=batch_size, workers=workers):
            cams = None
            if cam_dir is not None:
                good = [t for _, t, _, probs in batch if probs is not None]
                cams = iter(pred.cams(np.stack([t.numpy() for t in good])) if good else ())
            for p, img, err, probs in batch:
                if probs is None:
                    row = RowPredictor.error_row(str(p), err)
                else:
                    row = pred.result(str(p), probs)
                cam = next(cams) if cams is not None and probs is not None else None
                if cam is not None and row["error"] is None:
                    overlay = cam_dir / cam_filename(p, taken)
                    row["cam"] = str(_save_overlay(img, cam, overlay))
                if writer is not None:
                    writer.write(row)
                if bar is not None:
                    bar.advance()
                yield row
    finally:
        if bar is not None:
            bar.close()


def _save_overlay(img: Any, cam: np.ndarray, path: Path) -> Path:
    from ..explain.overlay import overlay_heatmap, save_png

    hwc = np.asarray(img).transpose(1, 2, 0)
    return save_png(overlay_heatmap(hwc, cam), path)


class _Bar:
    """A rich progress bar on stderr (stdout may be carrying JSON or CSV rows)."""

    def __init__(self, total: int, skipped: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        desc = "predict" + (f" (resuming, {skipped} done)" if skipped else "")
        self._p = Progress(TextColumn(f"[bold]{desc}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(),
                           console=Console(stderr=True), transient=False)
        self._t = self._p.add_task(desc, total=total)
        self._p.start()

    def advance(self) -> None:
        self._p.advance(self._t)

    def close(self) -> None:
        self._p.stop()
