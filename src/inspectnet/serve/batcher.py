"""Dynamic batching and admission by expected wait, for the REST service.

Requests whose images arrive within a few milliseconds of each other share one inference
batch, as Triton's dynamic batcher and TorchServe's batching do:

- each request decodes its own images (on a thread pool), then :meth:`Batcher.submit`
  puts them on one queue as a job (a request's images are never split across batches);
- ``workers`` inference threads take turns at gathering: the one gathering takes queued
  jobs up to ``max_batch`` images, and while fewer are there *and* admitted requests are
  still being read or decoded (they will come), it waits for them, at most ``batch_wait``
  after the first job was queued. Nobody coming, or the first job already waited that
  long (the workers were busy): the batch runs at once, so a lone client pays no delay;
- one ``predict`` call per batch; each job's future gets its rows of the result.

Admission (:meth:`Batcher.admit`) is decided by the wait a new request would have: the
images ahead of it (queued, in running batches, and one per admitted request not yet
queued) divided by the measured drain rate (an EWMA of images/s over recent batches; a
batch running longer than the rate predicts lowers it at once). Over ``max_wait`` the
request is refused with the seconds after which the backlog will have drained, for
``Retry-After``. When the service is idle the wait is 0 and a request is always admitted.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

#: Weight of the newest batch in the drain-rate average.
EWMA_ALPHA = 0.2


class Ticket:
    """An admitted request's place in the backlog, settled once: by :meth:`Batcher.submit`
    or by :meth:`Batcher.release`, whichever comes first (the other is then a no-op)."""

    __slots__ = ("settled",)

    def __init__(self) -> None:
        self.settled = False


@dataclass
class Job:
    """One request's decoded images, waiting for a batch."""

    images: np.ndarray  # (n, 3, S, S) uint8
    future: Future
    t_queued: float

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


@dataclass
class BatchResult:
    """What a job gets back: its probability rows and how its batch went."""

    probs: np.ndarray  # (n, C)
    batch_size: int  # images in the whole batch
    queue_ms: float  # from submit to the start of the batch
    infer_ms: float  # the batch's predict call


class Batcher:
    """Gathers the queued jobs into batches and runs them on ``workers`` threads.

    Args:
        predict: ``(B, 3, S, S)`` uint8 -> ``(B, C)`` probabilities (thread-safe when
            ``workers > 1``: ONNX Runtime sessions and torch inference are).
        max_batch: Most images in one batch.
        batch_wait: Seconds a batch may wait for more images after its first was queued.
        workers: Inference threads.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 batch_wait: float = 0.003, workers: int = 1) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self.workers = workers
        self._cond = threading.Condition()
        self._gather = threading.Lock()  # one gatherer at a time; the others compute
        self._queue: deque[Job] = deque()
        self._queued = 0  # images in the queue
        self._pending = 0  # admitted requests not yet queued (reading, decoding)
        self._running: dict[int, tuple[float, int]] = {}  # batch id -> (start, images)
        self._next_id = 0
        self._closing = False
        self._threads: list[threading.Thread] = []
        self.rate: float | None = None  # drain rate, images/s (EWMA)
        self.batches = 0
        self.images = 0
        self.largest = 0

    # ----------------------------------------------------------------- life cycle
    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"inspectnet-batch-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, timeout: float | None = None) -> bool:
        """Stop after the queue is drained (every queued job is answered); True when all
        the workers ended within ``timeout`` seconds."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        return not any(t.is_alive() for t in self._threads)

    def measure(self, images: int, seconds: float) -> None:
        """Feed the drain-rate average with a batch timed elsewhere (the warm-up)."""
        with self._cond:
            self._update_rate(images, seconds)

    # ----------------------------------------------------------------- admission
    def admit(self, max_wait: float) -> Ticket | int:
        """A :class:`Ticket` when the expected wait of a new request is under ``max_wait``
        seconds (then :meth:`submit` or :meth:`release` it), else the seconds until the
        backlog drains (at least 1), for ``Retry-After``."""
        with self._cond:
            wait = self._expected_wait()
            if wait > max_wait:
                return max(1, math.ceil(wait))
            self._pending += 1
            return Ticket()

    def release(self, ticket: Ticket) -> None:
        """The request ended without being queued (bad upload, client gone); a no-op for
        a ticket already submitted or released."""
        with self._cond:
            if ticket.settled:
                return
            ticket.settled = True
            self._pending -= 1
            self._cond.notify_all()  # a gatherer may be waiting for it

    def submit(self, ticket: Ticket, images: np.ndarray) -> Future | None:
        """Queue an admitted request's images; the future resolves to a :class:`BatchResult`.
        None when the ticket was released meanwhile (the request is gone)."""
        job = Job(images, Future(), time.perf_counter())
        with self._cond:
            if ticket.settled:
                return None
            ticket.settled = True
            self._pending -= 1
            self._queue.append(job)
            self._queued += job.n
            self._cond.notify_all()
        return job.future

    def expected_wait(self) -> float:
        with self._cond:
            return self._expected_wait()

    def _backlog(self) -> int:
        return self._queued + sum(n for _, n in self._running.values()) + self._pending

    def _expected_wait(self) -> float:
        backlog = self._backlog()
        if backlog == 0:
            return 0.0
        rate = self.rate or 1.0
        now = time.perf_counter()
        for start, n in self._running.values():
            # A batch that runs longer than the rate says shows the rate is lower now.
            elapsed = now - start
            if elapsed * rate / self.workers > n:
                rate = min(rate, self.workers * n / elapsed)
        return backlog / rate

    def _update_rate(self, images: int, seconds: float) -> None:
        sample = self.workers * images / max(seconds, 1e-6)
        self.rate = sample if self.rate is None else (1 - EWMA_ALPHA) * self.rate + EWMA_ALPHA * sample

    def stats(self) -> dict[str, float | int | None]:
        with self._cond:
            return {"batches": self.batches, "images": self.images,
                    "mean_batch": round(self.images / self.batches, 3) if self.batches else 0.0,
                    "largest_batch": self.largest, "queued_images": self._queued,
                    "running_images": sum(n for _, n in self._running.values()), "pending_requests": self._pending,
                    "drain_rate_img_s": round(self.rate, 1) if self.rate else None,
                    "expected_wait_ms": round(self._expected_wait() * 1e3, 1),
                    "max_batch": self.max_batch, "batch_wait_ms": self.batch_wait * 1e3, "workers": self.workers}

    # ----------------------------------------------------------------- workers
    def _take(self) -> tuple[int, list[Job]] | None:
        """The next batch (its id and jobs), or None when closing with nothing left."""
        with self._gather, self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            deadline = self._queue[0].t_queued + self.batch_wait
            jobs: list[Job] = []
            n = 0
            while True:
                while self._queue and n + self._queue[0].n <= self.max_batch:
                    job = self._queue.popleft()
                    self._queued -= job.n
                    if job.future.set_running_or_notify_cancel():  # False: the client left
                        jobs.append(job)
                        n += job.n
                left = deadline - time.perf_counter()
                if self._queue or n >= self.max_batch or self._pending == 0 or self._closing or left <= 0:
                    break
                self._cond.wait(left)
            if not jobs:
                return self._next_id, []
            self._next_id += 1
            self._running[self._next_id] = (time.perf_counter(), n)
            return self._next_id, jobs

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            bid, jobs = taken
            if jobs:
                self._run(bid, jobs)

    def _run(self, bid: int, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        n = sum(j.n for j in jobs)
        try:
            # numpy, not torch.cat: a torch copy would start an OpenMP team on this thread
            # whose idle workers spin beside the engine.
            x = jobs[0].images if len(jobs) == 1 else np.concatenate([np.asarray(j.images) for j in jobs])
            probs = np.asarray(self.predict(x))
        except BaseException as e:  # noqa: BLE001 - every waiting request must hear of it
            for j in jobs:
                j.future.set_exception(e)
            return
        finally:
            dt = time.perf_counter() - t0
            with self._cond:
                self._running.pop(bid, None)
        with self._cond:
            self._update_rate(n, dt)
            self.batches += 1
            self.images += n
            self.largest = max(self.largest, n)
        off = 0
        for j in jobs:
            j.future.set_result(BatchResult(probs[off:off + j.n], n, (t0 - j.t_queued) * 1e3, dt * 1e3))
            off += j.n
