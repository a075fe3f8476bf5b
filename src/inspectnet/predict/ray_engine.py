"""Batch inference on Ray Data: the station over a cluster, one ONNX session per worker.

``inspectnet predict RUN 'archive/**' --engine ray`` hands the paths to Ray Data
(``pip install 'inspectnet[ray]'``). Each Ray worker is an actor holding one
:class:`~inspectnet.station.Station` (one intra-op thread, one CPU), which decodes its batch
with the station's own loader and returns the probabilities. The driver puts them back in
input order and turns them into rows with the same :class:`~inspectnet.station.RowPredictor`
code as the local path, so :func:`~inspectnet.predict.stream.run_predictions` writes the
same CSV or JSON lines, resumes the same way and gives unreadable files the same error rows.

Ray is imported here only, and nothing here imports torch. With ``RAY_ADDRESS`` set (or Ray
already initialised by the caller) the work goes to that cluster; otherwise a local one is
started. Workers on other machines read the files and the run by the driver's absolute
paths: put both on a shared file system.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..card import read_card
from ..errors import ConfigError, InspectnetError
from ..station import BatchItem, RowPredictor, Station, default_threads, export_file

ENGINE = "ray"


def connect(workers: int | None = None) -> bool:
    """Make sure Ray is initialised; True when this call started it.

    Ray already initialised (a caller's ``ray.init``) is used as it is; with ``RAY_ADDRESS``
    set, ``ray.init()`` joins that cluster; otherwise a local one starts with a CPU per
    core, or per worker when more workers are asked for (Ray then shares the cores).
    """
    import ray

    if ray.is_initialized():
        return False
    # Ray's own notices (token authentication...) would bury predict's summary line; its
    # failures still arrive as exceptions.
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)  # a cluster sets its own resources
    else:
        ray.init(num_cpus=max(workers or 0, default_threads()), **quiet)
    return True


class _Infer:
    """One Ray worker (an actor): a station with one thread, reused for all its batches."""

    def __init__(self, run: str) -> None:
        self.station = Station(run, threads=1)
        self.n_classes = len(self.station.card.classes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Path(str(f)) for f in batch["file"]]
        # One chunk of the station's own streaming loop: its decoder, its error handling.
        items = [it for chunk in self.station.predict_batches(files, batch_size=max(len(files), 1), workers=1)
                 for it in chunk]
        dtype = next((q.dtype for _, _, _, q in items if q is not None), np.float32)
        probs = np.full((len(items), self.n_classes), np.nan, dtype=dtype)
        for k, (_, _, _, q) in enumerate(items):
            if q is not None:
                probs[k] = q
        return {"path": batch["path"],
                "error": np.array([e or "" for _, _, e, _ in items], dtype=object),
                "ok": np.array([q is not None for _, _, _, q in items], dtype=bool),
                "probs": probs}


class RayStation(RowPredictor):
    """The station on a Ray cluster: rows like :class:`~inspectnet.station.Station`'s.

    The driver only reads the card (the rows and the decision rule); the ONNX sessions live
    in the workers.

    Args:
        run: Run folder (or its ``model/``) with an up-to-date ONNX export.
        workers: Ray workers, one ONNX session and one CPU each (default: the cluster's CPUs).

    Raises:
        ModelError: no export, a stale one, or a bad card (checked here, before Ray starts).
        ConfigError: ``workers`` below 1.
        ModuleNotFoundError: Ray is not installed (the ``[ray]`` extra).
    """

    engine = ENGINE

    def __init__(self, run: str | Path, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers={workers!r} must be an integer of at least 1", key="workers")
        import ray
        import ray.data  # noqa: F401 - a missing [ray] extra is reported before anything else

        self.card = read_card(run)
        export_file(run)  # a missing or stale export fails here, not inside a worker
        self.run = Path(run).resolve()
        connect(workers)
        self.workers = workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)

    def predict_batches(self, paths: list[Path], batch_size: int = 32, workers: int | None = None,
                        ) -> Iterator[list[BatchItem]]:
        """Batches of ``(path, None, error, probs)`` in input order, as the local station's
        (without the decoded image: it stays in the worker).

        Args:
            paths: The files.
            batch_size: Images per worker call (and per ONNX run).
            workers: Ray workers (default: :attr:`workers`).

        Raises:
            ConfigError: ``batch_size`` or ``workers`` below 1.
        """
        n = self.workers if workers is None else workers
        for name, v in (("batch_size", batch_size), ("workers", n)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer of at least 1", key=name)
        if not paths:
            return
        ds = self._dataset(paths, batch_size, n)
        data_log = logging.getLogger("ray.data")
        level = data_log.level
        data_log.setLevel(logging.ERROR)  # its INFO lines and notices, one per run, on stderr
        try:
            for out in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
                yield [(Path(str(p)), None, str(e) or None, q if ok else None)
                       for p, e, ok, q in zip(out["path"], out["error"], out["ok"], out["probs"])]
        except Exception as e:  # noqa: BLE001 - a worker's own error, unwrapped from Ray's
            cause = _inspectnet_cause(e)
            if cause is None:
                raise
            raise cause from None
        finally:
            data_log.setLevel(level)

    def _dataset(self, paths: list[Path], batch_size: int, workers: int) -> Any:
        import ray.data

        items = [{"path": str(p), "file": os.path.abspath(p)} for p in paths]
        # A few files still reach every worker (smaller batches), and no worker starts idle.
        size = max(1, min(batch_size, -(-len(items) // workers)))
        blocks = -(-len(items) // size)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.map_batches(_Infer, fn_constructor_kwargs={"run": str(self.run)}, batch_size=size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
                            num_cpus=1)
        ctx = ds.context
        ctx.execution_options.preserve_order = True  # rows in input order, as locally
        ctx.enable_progress_bars = False  # predict has its own (--progress)
        ctx.print_on_execution_start = False
        return ds

    def predict_paths(self, paths: list[Path], batch_size: int = 32,
                      workers: int | None = None) -> Iterator[dict[str, Any]]:
        """Stream results in input order (``workers``: Ray workers, default :attr:`workers`)."""
        for batch in self.predict_batches(paths, batch_size=batch_size, workers=workers):
            for p, _, err, probs in batch:
                yield self.error_row(str(p), err) if probs is None else self.result(str(p), probs)


def _inspectnet_cause(e: BaseException) -> InspectnetError | None:
    """The user-facing error a Ray worker raised (a stale export...), if that is what ``e`` wraps."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, InspectnetError):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    return None
