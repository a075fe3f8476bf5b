"""Helpers shared by test_export, test_serve and test_browser (imported, not a conftest).

Trained runs are cached per test session in a module-level dict, so importing the
fixtures into several test modules still trains each model once.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_toy_set

_RUNS: dict[str, Path] = {}
_LOCK = threading.Lock()


def trained_run(factory: pytest.TempPathFactory, kind: str) -> Path:
    """A small trained (and ONNX-exported) run: ``seed`` (seed-cnn, 48 px) or ``lite``
    (efficientnet_lite0 features, 64 px)."""
    with _LOCK:
        if kind not in _RUNS:
            from inspectnet.export import export_onnx
            from inspectnet.train.run import train

            base = factory.getbasetemp() / "serve_runs"
            data = base / "data"
            if not data.exists():
                make_toy_set(data, n_per_class=24, size=64, seed=1)
            if kind == "seed":
                train(data, out=base / kind, approach="scratch", model="seed-cnn", img_size=48, epochs=3, quiet=True)
            elif kind == "lite":
                train(data, out=base / kind, approach="features", model="efficientnet_lite0", img_size=64, quiet=True)
            else:
                raise ValueError(kind)
            export_onnx(base / kind)
            _RUNS[kind] = base / kind
        return _RUNS[kind]


@pytest.fixture(scope="session")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory, "seed")


@pytest.fixture(scope="session")
def lite_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory, "lite")


def toy_images(factory: pytest.TempPathFactory) -> Path:
    return factory.getbasetemp() / "serve_runs" / "data"


# ---------------------------------------------------------------- a real server on loopback


@contextlib.contextmanager
def running_server(app, ready_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL.

    The socket is bound here (port 0) and handed to uvicorn, so there is no race for the
    port between choosing it and binding it.
    """
    import uvicorn

    from inspectnet.serve.ready import wait_ready

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, ready_timeout, interval=0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ---------------------------------------------------------------- bad inputs, made in memory


def png_bytes(size: int = 32, value: int = 128, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    arr = np.full((size, size, 3), value, np.uint8)
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid tiny PNG whose header claims ``width x height`` pixels (900 MP by default).

    Decoders that trust the header would allocate gigabytes; ours must refuse from the
    header alone.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@contextlib.contextmanager
def serve_process(cmd: list[str], env: dict[str, str] | None = None,
                  ready_timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen]]:
    """``cmd`` (an ``inspectnet serve RUN ...`` command line) in a subprocess on a free port;
    yields ``(url, process)`` once ``/readyz`` answers (the test fails with the server's output
    when it does not). SIGTERM at the end: the caller checks ``process.returncode`` after."""
    from inspectnet.serve.ready import free_port, wait_ready

    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, ready_timeout, alive=lambda: proc.poll() is None)
        except RuntimeError as e:
            pytest.fail(f"{' '.join(map(str, cmd))} did not become ready: {e}\n{proc.stdout.read().decode()[-2000:]}")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)
