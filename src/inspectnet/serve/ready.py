"""Start-up helpers for anything that launches ``inspectnet serve`` and waits for it
(tests, benchmarks, deployment scripts): a free loopback port and a readiness wait."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for a server started in another process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 60.0, alive: Callable[[], bool] | None = None,
               interval: float = 0.1) -> None:
    """Poll ``url/readyz`` until it answers 200.

    Args:
        url: Base URL of the server.
        timeout: Seconds before giving up.
        alive: Called between polls; when it returns False the wait stops at once (the
            server process died, no point waiting for the timeout).

    Raises:
        RuntimeError: the server died or was not ready in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:  # loopback only
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"server at {url} exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")
        time.sleep(interval)
