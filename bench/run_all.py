"""Run every benchmark (``make bench``) and write ``bench/RESULTS.md`` from ``bench/results/*.json``.

Each benchmark runs as its own subprocess, one after the other, with ``--quick`` where the
script offers that flag (found in its source; pass ``--full`` to never add it). A failing or
timed-out benchmark is recorded (return code, last lines of stderr) and the others still
run; the exit status is non-zero when any failed. ``bench/RESULTS.md`` gets one section per
results file: the machine line, the table of its rows, its other top-level numbers, and a
warning when the latest run of that benchmark failed (its numbers are then older).

    .venv/bin/python bench/run_all.py                  # all, quick where offered
    .venv/bin/python bench/run_all.py --only train_speed framework_compare
    .venv/bin/python bench/run_all.py --only-report    # RESULTS.md from the existing JSON files
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE / "RESULTS.md"
NOTES = HERE / "notes"  # bench/notes/<benchmark>.md: prose shown above that benchmark's table
SUMMARY = RESULTS / "run_all.json"
ORDER = ["synth_speed", "doctor_speed", "alloc_faults", "train_speed", "framework_compare", "infer_speed", "int8_parity",
         "serve_load", "ray_scaling", "startup", "first_epoch", "real_accuracy", "anomaly", "cuda_check"]
# Scripts in bench/ that are helpers of a benchmark, not benchmarks.
HELPERS = {"run_all", "keras_seed_cnn", "minimal_torch"}


def offers_quick(script: Path) -> bool:
    try:
        return '"--quick"' in script.read_text() or "'--quick'" in script.read_text()
    except OSError:
        return False


def run_one(name: str, full: bool, timeout: int) -> dict[str, Any]:
    script = HERE / f"{name}.py"
    if not script.is_file():
        return {"name": name, "status": "missing", "rc": None, "seconds": 0.0, "command": "",
                "error": f"{script} does not exist"}
    cmd = [sys.executable, str(script)] + (["--quick"] if not full and offers_quick(script) else [])
    print(f"\n=== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
    t = time.perf_counter()
    try:
        # stdout streams through (tables as they come); stderr is kept for the failure record.
        p = subprocess.run(cmd, cwd=HERE.parent, stderr=subprocess.PIPE, text=True, timeout=timeout)
        rc, err = p.returncode, p.stderr
        status = "ok" if rc == 0 else "failed"
    except subprocess.TimeoutExpired as e:
        rc, status = None, "timeout"
        err = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or ""))
        err += f"\n(killed after {timeout} s)"
    secs = time.perf_counter() - t
    if status != "ok":
        sys.stderr.write(err[-3000:])
    print(f"=== {name}: {status} in {secs:.0f} s", flush=True)
    return {"name": name, "status": status, "rc": rc, "seconds": round(secs, 1),
            "command": " ".join(cmd[1:]), "error": "" if status == "ok" else err.strip()[-1500:],
            "date": time.strftime("%Y-%m-%d %H:%M")}


# --------------------------------------------------------------------------- report --------
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, (dict, list)):
        s = json.dumps(v, separators=(",", ":"))
        return s if len(s) <= 80 else s[:77] + "..."
    return str(v).replace("|", "\\|").replace("\n", " ")


def _machine_line(d: dict[str, Any]) -> str:
    m = d.get("machine")
    if isinstance(m, dict):
        parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None,
                 f"torch {m['torch']} ({m.get('torch_threads')} threads)" if m.get("torch") else None,
                 f"python {m['python']}" if m.get("python") else None,
                 f"GPU {m['cuda']}" if m.get("cuda") else "no GPU" if "cuda" in m else None,
                 m.get("date")]
        return ", ".join(str(p) for p in parts if p)
    bits = [str(m)] if m else []
    for k in ("processor", "cpu", "python", "threads", "cores"):
        if d.get(k) not in (None, ""):
            bits.append(f"{k} {d[k]}")
    return ", ".join(bits) or "not recorded"


def _rows_of(d: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    if isinstance(d.get("rows"), list):
        return "rows", [r for r in d["rows"] if isinstance(r, dict)]
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            return k, v
    return None, []


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table; rows with a ``part`` key get one table per part, and columns empty
    in a table are left out."""
    if rows and all("part" in r for r in rows):
        out: list[str] = []
        for part in dict.fromkeys(r["part"] for r in rows):
            group = [{k: v for k, v in r.items() if k != "part"} for r in rows if r["part"] == part]
            out += [f"**{part}**" if len(str(part)) > 2 else f"**part ({part})**", ""] + _table(group) + [""]
        return out[:-1]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols and r.get(c) not in (None, "")]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def write_report(summary: dict[str, Any] | None) -> Path:
    lines = ["# Benchmark results", "",
             "Generated by `bench/run_all.py` from `bench/results/*.json`; each section is one benchmark's "
             "latest JSON. The machine is a shared 2-core VM: compare ratios measured in the same run, "
             "not absolute numbers across sections.", ""]
    runs = {r["name"]: r for r in (summary or {}).get("runs", [])}
    if summary:
        lines += [f"## Last `run_all` ({summary.get('date', '?')})", "",
                  "| benchmark | status | seconds | command |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['status']} | {r['seconds']} | `{r['command']}` |" for r in summary["runs"]]
        lines.append("")
    files = sorted(p for p in RESULTS.glob("*.json") if p != SUMMARY)
    order = {n: i for i, n in enumerate(ORDER)}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    for path in files:
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            lines += [f"## {path.stem}", "", f"Cannot read `{path.name}`: {e}", ""]
            continue
        if not isinstance(d, dict):
            continue
        name = d.get("benchmark") or path.stem
        lines += [f"## {name}", "", f"Machine: {_machine_line(d)}", ""]
        r = runs.get(path.stem)
        if r and r["status"] != "ok":
            lines += [f"> **The last run of this benchmark {r['status']}** (rc {r['rc']}); the numbers below are "
                      f"from an earlier run. Error: `{_fmt(r['error'][-300:])}`", ""]
        note = NOTES / f"{path.stem}.md"
        if note.is_file():  # what the numbers mean, written by hand: kept across regenerations
            lines += [note.read_text().strip(), "", "Generated from the JSON:", ""]
        key, rows = _rows_of(d)
        if rows:
            lines += _table(rows) + [""]
        skip = {"benchmark", "machine", key}
        if not isinstance(d.get("machine"), dict):  # these went into the machine line
            skip |= {"processor", "cpu", "python", "threads", "cores"}
        scalars = {k: v for k, v in d.items() if k not in skip and not isinstance(v, (dict, list))}
        nested = {k: v for k, v in d.items() if k not in skip and isinstance(v, (dict, list))}
        if scalars:
            if rows:
                lines += ["Other values: " + "; ".join(f"{k} = {_fmt(v)}" for k, v in scalars.items()), ""]
            else:
                lines += ["| value | |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()] + [""]
        if nested:
            lines += ["<details><summary>more fields</summary>", "", "```json",
                      json.dumps(nested, indent=1)[:4000], "```", "", "</details>", ""]
    for name, r in runs.items():
        if not (RESULTS / f"{name}.json").is_file():
            lines += [f"## {name}", "", f"No results file. Last run: {r['status']} (rc {r['rc']}): "
                      f"`{_fmt(r['error'][-300:])}`", ""]
    REPORT.write_text("\n".join(lines).rstrip() + "\n")
    return REPORT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (names without .py)")
    ap.add_argument("--only-report", action="store_true", help="run nothing; write RESULTS.md from the JSON files")
    ap.add_argument("--full", action="store_true", help="never pass --quick")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per benchmark before it is killed")
    args = ap.parse_args()

    previous = None
    if SUMMARY.is_file():
        try:
            previous = json.loads(SUMMARY.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
    if args.only_report:
        print(f"written: {write_report(previous)}")
        return 0

    names = args.only or ORDER
    unknown = sorted(p.stem for p in HERE.glob("*.py")
                     if not p.stem.startswith("_") and p.stem not in HELPERS and p.stem not in ORDER)
    if unknown and not args.only:
        print(f"note: not in run_all's list, not run: {', '.join(unknown)}")
    runs = [run_one(n, args.full, args.timeout) for n in names]
    # Keep earlier records of benchmarks not run this time (--only), so RESULTS.md stays complete.
    merged = {r["name"]: r for r in (previous or {}).get("runs", [])}
    merged.update({r["name"]: r for r in runs})
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"),
               "runs": [merged[n] for n in ORDER if n in merged] + [r for n, r in merged.items() if n not in ORDER]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwritten: {write_report(summary)}")
    failed = [r for r in runs if r["status"] != "ok"]
    print("\n" + "\n".join(f"  {r['name']:<20} {r['status']:<8} {r['seconds']:>7.0f} s" for r in runs))
    if failed:
        print(f"{len(failed)} benchmark(s) did not finish: {', '.join(r['name'] for r in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
