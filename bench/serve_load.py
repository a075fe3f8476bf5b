"""Load test of ``inspectnet serve``: an efficientnet_lite0 run on loopback, 1 to 200 clients.

Trains a small features-approach run (224 px) on a generated set (or takes ``--run``),
exports it to ONNX, then for each server, the one in this tree ("after") and, when
``--before-src`` holds an older ``src/`` (default ``/tmp/orig/src``), that one too
("before"), both with their default settings:

1. starts ``inspectnet serve`` in a subprocess on 127.0.0.1 and warms it up;
2. for 1, 8, 50 and 200 concurrent clients (threads, one keep-alive HTTP connection each,
   bodies encoded once so that the clients cost little CPU), sends single-image POSTs,
   one attempt each (a 503 is counted, with whether it had ``Retry-After``, and the
   client goes on): p50/p99 latency of the answered requests, images/s answered, 503s,
   other errors, the server's RSS before/after, and (after) the batcher's mean batch;
3. SIGTERM under load: 50 clients keep sending, the server gets SIGTERM; counted: the
   requests in flight at the signal that were answered or dropped, its exit status and
   the seconds it took to exit, and the server's own "answered N of M admitted" line.

Clients and server share the same cores, so the numbers are a lower bound of what the
server does for remote clients; what else ran is recorded (load average, busiest
processes). Usage: ``python bench/serve_load.py [--quick] [--run RUN] [--skip-before]``;
prints a table and writes ``bench/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_results  # noqa: E402

from inspectnet.serve.ready import free_port, wait_ready  # noqa: E402

HOST = "127.0.0.1"  # loopback only
LEVELS = {1: 400, 8: 1000, 50: 2000, 200: 2000}  # clients -> requests
DISCONNECTS = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
               BrokenPipeError, ConnectionAbortedError)


def rss_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def busiest_processes(n: int = 4) -> list[str]:
    """The processes using the most CPU (other work on these cores skews the numbers)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,rss,comm", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:n + 1]
    except (OSError, subprocess.SubprocessError):
        return []
    return [" ".join(line.split()) for line in out]


def multipart(name: str, blob: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    return head + blob + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(conn: http.client.HTTPConnection | None, port: int, body: bytes, ctype: str
         ) -> tuple[http.client.HTTPConnection | None, str, int, str | None]:
    """One POST on a keep-alive connection: ``(connection, kind, status, Retry-After)``;
    kind is ``ok`` | ``503`` | ``http_<status>`` | ``refused`` | ``disconnected`` | ``timeout``."""
    try:
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
            conn.connect()
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        data = r.read()
        retry = r.getheader("Retry-After")
        if (r.getheader("Connection") or "").lower() == "close":
            conn.close()
            conn = None
        if r.status == 200:
            ok = len(json.loads(data)["results"]) == 1
            return conn, "ok" if ok else "bad_body", 200, retry
        return conn, "503" if r.status == 503 else f"http_{r.status}", r.status, retry
    except ConnectionRefusedError:
        kind = "refused"
    except DISCONNECTS:
        kind = "disconnected"
    except (socket.timeout, TimeoutError):
        kind = "timeout"
    except OSError as e:
        kind = f"oserror_{e.errno}"
    if conn is not None:
        conn.close()
    return None, kind, 0, None


def load(port: int, clients: int, requests: int, bodies: list[tuple[bytes, str]]) -> dict[str, Any]:
    """``requests`` POSTs spread over ``clients`` threads; one attempt each."""
    per = [requests // clients + (i < requests % clients) for i in range(clients)]
    records: list[tuple[str, float, str | None]] = []
    lock = threading.Lock()

    def client(k: int, n: int) -> None:
        mine, conn = [], None
        for i in range(n):
            body, ctype = bodies[(k * 7 + i) % len(bodies)]
            t = time.perf_counter()
            conn, kind, _, retry = post(conn, port, body, ctype)
            mine.append((kind, time.perf_counter() - t, retry))
        if conn is not None:
            conn.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(k, n)) for k, n in enumerate(per)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = np.array([d for k, d, _ in records if k == "ok"]) * 1e3
    busy = [r for k, _, r in records if k == "503"]
    kinds: dict[str, int] = {}
    for k, _, _ in records:
        if k not in ("ok", "503"):
            kinds[k] = kinds.get(k, 0) + 1
    return {"clients": clients, "requests": len(records), "ok": int(lat.size), "n503": len(busy),
            "n503_no_retry_after": sum(1 for r in busy if not r), "retry_after_min": min((int(r) for r in busy if r), default=None),
            "errors": sum(kinds.values()), "error_kinds": kinds or None, "wall_s": round(wall, 2),
            "img_s": lat.size / wall, "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None}


def batcher_stats(port: int) -> dict[str, Any] | None:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/readyz")
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body.get("batcher")
    except (OSError, ValueError):
        return None


class Server:
    """``inspectnet serve RUN`` in a subprocess, from this tree or from ``src``."""

    def __init__(self, run: Path, src: Path | None, log: Path, extra: list[str] | None = None) -> None:
        self.port = free_port()
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        self.log_path = log
        self.log = open(log, "wb")  # a file, not a pipe: a full pipe would block the server
        cmd = [sys.executable, "-m", "inspectnet.cli", "serve", str(run), "--port", str(self.port), *(extra or [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        try:
            wait_ready(f"http://{HOST}:{self.port}", 180, alive=lambda: self.proc.poll() is None)
        except RuntimeError as e:
            self.stop()
            raise SystemExit(f"{e}: {log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sigterm_under_load(server: Server, bodies: list[tuple[bytes, str]], clients: int = 50,
                       load_s: float = 1.5) -> dict[str, Any]:
    """Clients keep sending; SIGTERM after ``load_s``; who got an answer, how the server ended."""
    port = server.port
    records: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        mine, conn = [], None
        for i in range(100_000):  # bounded; ends at the first failure after the signal
            body, ctype = bodies[(k * 7 + i) % len(bodies)]
            t = time.perf_counter()
            conn, kind, _, _ = post(conn, port, body, ctype)
            mine.append((t, time.perf_counter(), kind))
            if stop.is_set() and kind not in ("ok", "503"):
                break
            if time.perf_counter() - t0 > load_s + 60:
                break
        if conn is not None:
            conn.close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    time.sleep(load_s)
    t_sig = time.perf_counter()
    stop.set()
    server.proc.send_signal(signal.SIGTERM)
    try:
        rc = server.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        rc = server.proc.wait()
    exit_s = time.perf_counter() - t_sig
    for th in threads:
        th.join(timeout=90)
    server.log.close()
    in_flight = [k for s, e, k in records if s < t_sig < e]
    tail = [line for line in server.log_path.read_text(errors="replace").splitlines() if "admitted" in line]
    said = re.search(r"answered (\d+) of (\d+) admitted", tail[-1]) if tail else None
    later: dict[str, int] = {}
    for s, _, k in records:
        if s >= t_sig:
            later[k] = later.get(k, 0) + 1
    # A request sent on a keep-alive connection that the server was closing as idle is
    # "disconnected" without having been read: not admitted. Only the server can tell
    # admitted from not, hence its own count (the "before" server has none).
    return {"clients": clients, "in_flight_at_sigterm": len(in_flight),
            "in_flight_answered": sum(k == "ok" for k in in_flight),
            "in_flight_503": sum(k == "503" for k in in_flight),
            "in_flight_disconnected": sum(k not in ("ok", "503") for k in in_flight),
            "admitted_dropped": int(said[2]) - int(said[1]) if said else None,
            "sent_after_sigterm": dict(sorted(later.items())),
            "exit_code": rc, "exit_s": round(exit_s, 2), "server_says": tail[-1] if tail else None}


def bench_server(name: str, run: Path, src: Path | None, bodies: list[tuple[bytes, str]], tmp: Path,
                 args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    server = Server(run, src, tmp / f"server_{name}.log", args.server_args.split() if name == "after" else None)
    rows = []
    try:
        load(server.port, 1, 20, bodies)  # warm-up: ORT arenas, first connections
        rss_start = rss_mb(server.proc.pid)["rss_mb"]
        for clients, n in LEVELS.items():
            if args.levels and clients not in args.levels:
                continue
            n = max(n // 4, clients * 2) if args.quick else n
            before, stats0 = rss_mb(server.proc.pid), batcher_stats(server.port)
            row = {"server": name, **load(server.port, clients, n, bodies)}
            after, stats1 = rss_mb(server.proc.pid), batcher_stats(server.port)
            if stats0 and stats1 and stats1["batches"] > stats0["batches"]:
                row["mean_batch"] = (stats1["images"] - stats0["images"]) / (stats1["batches"] - stats0["batches"])
            row.update(rss_before_mb=before["rss_mb"], rss_after_mb=after["rss_mb"],
                       rss_change_pct=100 * (after["rss_mb"] / before["rss_mb"] - 1))
            rows.append(row)
            print(f"  {name} {clients:>3} clients: {row['img_s']:.0f} img/s, p99 {row['p99_ms'] or 0:.0f} ms, "
                  f"{row['n503']} x 503, {row['errors']} errors", flush=True)
        rss_end = rss_mb(server.proc.pid)["rss_mb"]
        term = {"server": name, "rss_start_mb": rss_start, "rss_end_mb": rss_end,
                "rss_change_pct": 100 * (rss_end / rss_start - 1), **sigterm_under_load(server, bodies)}
    finally:
        server.stop()
    return rows, term


def make_run(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path]:
    from inspectnet.export import export_onnx
    from inspectnet.synth import generate

    data = generate(tmp / "data", n=60, seed=0, difficulty="easy", size=args.img_size, progress=False)
    run = args.run
    if run is None:
        from inspectnet.train.run import train

        t = time.perf_counter()
        # One view per image (tta_views=1): test-time augmentation multiplies the work per
        # image by its view count (8 by default for top-view parts); the serving path is
        # what this measures, comparable from run to run.
        train(data, out=tmp / "run", approach="features", model="efficientnet_lite0", img_size=args.img_size,
              tta_views=1, quiet=True)
        print(f"trained efficientnet_lite0 (features, {args.img_size} px) in {time.perf_counter() - t:.0f} s")
        run = tmp / "run"
    export_onnx(run)
    return run, data


def targets(rows: list[dict[str, Any]], terms: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, each True/False, for the "after" server."""
    after = {r["clients"]: r for r in rows if r["server"] == "after"}
    term = next((t for t in terms if t["server"] == "after"), None)
    if not after:
        return {}
    one, fifty, many = after.get(1), after.get(50), after.get(200)
    out: dict[str, Any] = {}
    if one and fifty:
        out["50_clients_no_errors_no_503"] = fifty["errors"] == 0 and fifty["n503"] == 0
        out["50_clients_throughput_x_one_client"] = round(fifty["img_s"] / one["img_s"], 2)
        out["50_clients_throughput_ge_1.5x"] = fifty["img_s"] >= 1.5 * one["img_s"]
        out["50_clients_p99_le_1s"] = (fifty["p99_ms"] or 0) <= 1000
    if many:
        out["200_clients_every_503_has_retry_after"] = many["n503_no_retry_after"] == 0
        out["200_clients_no_errors"] = many["errors"] == 0
        out["200_clients_rss_within_5pct"] = abs(many["rss_change_pct"]) <= 5
    if term:
        # From after the warm-up to the end of all levels (informational: the engine's
        # memory grows to a plateau as it meets batches of new sizes).
        out["rss_change_pct_whole_run"] = round(term["rss_change_pct"], 1)
        out["sigterm_no_admitted_dropped"] = term["admitted_dropped"] == 0
        out["sigterm_exit_0"] = term["exit_code"] == 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, help="An existing run folder (default: train one).")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--quick", action="store_true", help="A quarter of the requests at each level.")
    ap.add_argument("--before-src", type=Path, default=Path("/tmp/orig/src"),
                    help="An older src/ to measure side by side as 'before' (skipped when absent).")
    ap.add_argument("--skip-before", action="store_true")
    ap.add_argument("--levels", type=int, nargs="+", help="Only these client counts (of 1 8 50 200).")
    ap.add_argument("--server-args", default="", help="Extra options for the 'after' server (experiments; "
                                                      "the recorded run uses the defaults).")
    ap.add_argument("--no-write", action="store_true", help="Print only; leave the results file alone.")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    run, data = make_run(args, tmp)
    card = json.loads((run / "model" / "model.json").read_text())
    # Request bodies: real PNGs of the generated set, cycled, each encoded once.
    bodies = [multipart(p.name, p.read_bytes()) for p in sorted(data.rglob("*.png"))[:16]]
    context = {"loadavg_start": os.getloadavg(), "busiest_processes_start": busiest_processes()}
    servers = [("after", None)]
    if not args.skip_before and (args.before_src / "inspectnet").is_dir():
        servers.insert(0, ("before", args.before_src))
    rows, terms = [], []
    for name, src in servers:
        r, t = bench_server(name, run, src, bodies, tmp, args)
        rows += r
        terms.append(t)
    before = {r["clients"]: r for r in rows if r["server"] == "before"}
    for r in rows:
        if r["server"] == "after" and r["clients"] in before and before[r["clients"]]["img_s"]:
            r["img_s_x_before"] = round(r["img_s"] / before[r["clients"]]["img_s"], 2)
    print_table(rows, ["server", "clients", "requests", "ok", "n503", "n503_no_retry_after", "errors", "img_s",
                       "img_s_x_before", "p50_ms", "p99_ms", "mean_batch", "rss_before_mb", "rss_after_mb",
                       "rss_change_pct"],
                title=f"inspectnet serve, efficientnet_lite0 {args.img_size} px, loopback, {os.cpu_count()} cores")
    print_table(terms, ["server", "clients", "in_flight_at_sigterm", "in_flight_answered", "in_flight_503",
                        "in_flight_disconnected", "admitted_dropped", "exit_code", "exit_s", "rss_change_pct", "server_says"],
                title="SIGTERM under load")
    goals = targets(rows, terms)
    print("\ntargets: " + json.dumps(goals))
    context.update(loadavg_end=os.getloadavg(), busiest_processes_end=busiest_processes())
    print(f"load average (1/5/15 min) start {context['loadavg_start']}, end {context['loadavg_end']}")
    if args.no_write:
        return
    path = write_results("serve_load", rows, {"sigterm": terms, "targets": goals, "model": "efficientnet_lite0",
                                              "img_size": args.img_size, "engine": "onnx (auto)",
                                              "tta_views": card.get("tta_views"),
                                              "server_args": args.server_args or "(defaults)",
                                              "levels": {str(c): n for c, n in LEVELS.items()}, **context})
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
