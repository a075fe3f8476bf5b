"""Page faults and speed with and without inspectnet's allocator tuning, side by side.

Each configuration runs in a fresh subprocess (the effect is per process): batch-32
EfficientNet-Lite0 inference and training steps at 224 px, channels-last, reporting
minor page faults per batch, system CPU seconds and images/s.

    .venv/bin/python bench/alloc_faults.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402

CHILD = r"""
import json, resource, sys, time, torch
from inspectnet.runtime import tune_allocator
applied = tune_allocator()
from inspectnet.models import create_model
torch.manual_seed(0)
net = create_model("efficientnet_lite0", 2, pretrained=False).to(memory_format=torch.channels_last)
x = torch.rand(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 2, (32,))
out = {"tuned": applied}
def measure(fn, reps):
    fn()
    r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
    for _ in range(reps): fn()
    dt = time.perf_counter() - t; r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"images_per_s": 32 * reps / dt, "minor_faults_per_batch": (r1.ru_minflt - r0.ru_minflt) / reps,
            "sys_seconds_per_batch": (r1.ru_stime - r0.ru_stime) / reps}
net.eval()
with torch.inference_mode():
    out["inference"] = measure(lambda: net(x), 5)
net.train()
opt = torch.optim.AdamW(net.parameters(), 1e-4)
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
out["train"] = measure(step, 3)
print(json.dumps(out))
"""


def run(mode: str) -> dict:
    env = dict(os.environ, INSPECTNET_MALLOC=mode)
    res = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    results = {mode: run(mode) for mode in ("default", "tuned")}
    for stage in ("inference", "train"):
        base = results["default"][stage]
        for mode, r in results.items():
            s = r[stage]
            rows.append({"stage": stage, "malloc": mode, "images_per_s": round(s["images_per_s"], 1),
                         "minor_faults_per_batch": round(s["minor_faults_per_batch"]),
                         "sys_s_per_batch": round(s["sys_seconds_per_batch"], 3),
                         "speedup_vs_default": round(s["images_per_s"] / base["images_per_s"], 2)})
    print_table(rows, list(rows[0]), "glibc malloc default vs inspectnet tuned (efficientnet_lite0, batch 32, 224 px)")
    print(f"written: {write_results('alloc_faults', rows)}")


if __name__ == "__main__":
    main()
