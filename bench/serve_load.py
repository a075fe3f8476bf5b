"""Load test of ``inspectnet serve``: an efficientnet_lite0 run on loopback, many clients.

Trains a small features-approach run on a generated set (or takes ``--run``), exports it
to ONNX, starts ``inspectnet serve`` in a subprocess on 127.0.0.1, then sends
``--requests`` single-image POSTs from ``--clients`` concurrent clients (threads with one
keep-alive httpx client each). Reports throughput, p50/p95/p99 latency, errors (must be 0:
the queue is sized so that no request is shed) and the server's RSS before and after.

The clients run on the same 2 cores as the server, so the numbers are a lower bound of
what the server does for remote clients.

Usage: ``python bench/serve_load.py [--requests 2000] [--clients 8] [--workers N]``; prints
a table and writes ``bench/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

from inspectnet.serve.ready import free_port, wait_ready  # noqa: E402


def rss_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="An existing run folder (default: train one).")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0, help="Server inference threads (0: its default, one per core).")
    ap.add_argument("--img-size", type=int, default=224)
    args = ap.parse_args()

    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    from inspectnet.synth import generate

    data = generate(tmp / "data", n=60, seed=0, difficulty="easy", size=args.img_size, progress=False)
    run = args.run
    if run is None:
        from inspectnet.train.run import train

        t = time.perf_counter()
        train(data, out=tmp / "run", approach="features", model="efficientnet_lite0", img_size=args.img_size,
              quiet=True)
        print(f"trained efficientnet_lite0 (features, {args.img_size} px) in {time.perf_counter() - t:.0f} s")
        run = tmp / "run"
    from inspectnet.export import export_onnx

    export_onnx(run)
    # Request bodies: real PNGs of the generated set, cycled.
    blobs = [p.read_bytes() for p in sorted(data.rglob("*.png"))[:16]]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "inspectnet.cli", "serve", str(run), "--port", str(port),
         "--queue-size", str(args.clients * 2)] + (["--workers", str(args.workers)] if args.workers else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_ready(url, 120, alive=lambda: server.poll() is None)
        except RuntimeError as e:
            raise SystemExit(f"{e}: {server.stderr.read().decode()[-2000:]}") from None
        info = httpx.get(f"{url}/v1/model").json()
        engine, workers = info["engine"], info["limits"]["workers"]
        # Warm-up outside the measurement (first requests allocate ORT's arenas).
        with httpx.Client(base_url=url) as c:
            for b in blobs[:8]:
                c.post("/v1/predict", files=[("files", ("w.png", b, "image/png"))])
        before = rss_mb(server.pid)

        per_client = [args.requests // args.clients + (i < args.requests % args.clients) for i in range(args.clients)]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(k: int, n: int) -> None:
            mine, bad = [], []
            with httpx.Client(base_url=url, timeout=60) as c:
                for i in range(n):
                    body = blobs[(k * 7 + i) % len(blobs)]
                    t = time.perf_counter()
                    try:
                        r = c.post("/v1/predict", files=[("files", (f"{k}_{i}.png", body, "image/png"))])
                        ok = r.status_code == 200 and len(r.json()["results"]) == 1
                        if not ok:
                            bad.append(f"{r.status_code}: {r.text[:120]}")
                    except httpx.HTTPError as e:
                        bad.append(f"{type(e).__name__}: {e}")
                    mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)
                errors.extend(bad)

        threads = [threading.Thread(target=client, args=(k, n)) for k, n in enumerate(per_client)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)

    lat = np.array(latencies) * 1e3
    row = {
        "model": "efficientnet_lite0", "img_size": args.img_size, "engine": engine, "workers": workers,
        "clients": args.clients, "requests": len(lat), "errors": len(errors), "wall_s": wall,
        "req_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
        "rss_before_mb": before["rss_mb"], "rss_after_mb": after["rss_mb"], "peak_rss_mb": after["peak_rss_mb"],
    }
    print_table([row], ["engine", "workers", "clients", "requests", "errors", "req_s", "p50_ms", "p95_ms", "p99_ms",
                        "rss_before_mb", "rss_after_mb", "peak_rss_mb"],
                title=f"inspectnet serve, efficientnet_lite0 {args.img_size} px, loopback, {os.cpu_count()} cores")
    if errors:
        print(f"\n{len(errors)} errors, first: {errors[:3]}")
    load = os.getloadavg()  # other processes on these cores skew the numbers: record it
    print(f"load average (1/5/15 min) at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    path = write_results("serve_load", [row], {"first_errors": errors[:10], "loadavg_end": load,
                                               "machine": machine()})
    print(f"\nwritten: {path}")
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
