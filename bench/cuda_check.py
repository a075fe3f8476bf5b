"""CUDA check: the same code paths on a GPU, where one is lent (never in CI).

Trains the three approaches on a small synthetic set with ``--device cuda`` and
``--precision auto`` (bf16 where the GPU supports it), then checks what a CPU-only user
depends on when the model was trained on a GPU:

- the bundle loads on CPU and gives the same probabilities as on the GPU;
- the ONNX export of the GPU-trained run agrees with torch on CPU;
- fine-tuning throughput on the GPU, fp32 vs bf16 autocast, channels-last (a table).

Writes ``bench/results/cuda_check.json``. Exit status 1 if a check fails.

    python bench/cuda_check.py --n 240
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import print_table, write_results  # noqa: E402


def _throughput(model_name: str, size: int, precision: str, steps: int = 30, batch: int = 64) -> float:
    import torch

    from inspectnet.models.zoo import create_model

    net = create_model(model_name, 2).cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device="cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the same script without a GPU")
    args = ap.parse_args()

    import numpy as np
    import torch
    import yaml

    from inspectnet.bundle import load_model
    from inspectnet.data.cache import decode_all
    from inspectnet.synth import generate
    from inspectnet.train.run import train

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check here (--device cpu for a dry run)")
        return 0
    if gpu:
        print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}")
    root = args.out or Path(tempfile.mkdtemp(prefix="inspectnet-cuda-"))
    data = generate(root / "data", n=args.n, seed=0, difficulty="easy", size=256, progress=False)
    rows, failures = [], []
    for approach, model, size, epochs in (("scratch", "seed-cnn", 128, 15), ("features", "efficientnet_lite0", 224, 1),
                                          ("finetune", "efficientnet_lite0", 224, 4)):
        t = time.perf_counter()
        res = train(data, out=root / approach, approach=approach, model=model, img_size=size, epochs=epochs,
                    device=args.device, precision="auto", quiet=True, seed=0)
        secs = time.perf_counter() - t
        cfg = yaml.safe_load((res.run_dir / "config.yaml").read_text())
        # The GPU-trained bundle on CPU vs on the GPU: same probabilities on the test images.
        test = [p for p in res.run_dir.joinpath("split.csv").read_text().splitlines()[1:] if p.endswith(",test")]
        paths = [Path(r.split(",")[0]) for r in test][:64]
        x, _ = decode_all(paths, size, progress=False)
        xf = x.float().div(255)
        net_cpu = load_model(res.run_dir).network.float().eval()
        with torch.inference_mode():
            p_cpu = net_cpu(xf).softmax(1)
            p_gpu = net_cpu.to(args.device)(xf.to(args.device)).softmax(1).cpu()
        diff = float((p_cpu - p_gpu).abs().max())
        onnx_diff = None
        try:
            from inspectnet.export import export_onnx
            from inspectnet.predict import OnnxPredictor

            export_onnx(res.run_dir)
            p_onnx = torch.from_numpy(OnnxPredictor(res.run_dir).logits(xf.numpy())).softmax(1)
            onnx_diff = float((p_onnx - p_cpu).abs().max())
        except Exception as e:  # noqa: BLE001
            failures.append(f"{approach}: ONNX export/predict failed: {type(e).__name__}: {e}")
        row = {"approach": approach, "model": model, "img_size": size, "epochs_run": res.metrics["epochs_run"],
               "precision": cfg["precision"], "device": cfg["device"], "test_accuracy": res.metrics.get("accuracy"),
               "run_seconds": round(secs, 1), "max_prob_diff_cpu_gpu": diff, "max_prob_diff_onnx_cpu": onnx_diff}
        rows.append(row)
        print_table([row], list(row))
        if diff > 2e-2:  # cuDNN convolutions run in TF32 by default
            failures.append(f"{approach}: CPU and GPU probabilities differ by {diff:.2e}")
        if onnx_diff is not None and onnx_diff > 1e-3:
            failures.append(f"{approach}: ONNX and torch probabilities differ by {onnx_diff:.2e}")
        want = "bf16" if approach == "scratch" and torch.cuda.is_bf16_supported() else "32"
        if gpu and cfg["precision"] != want:
            failures.append(f"{approach}: precision auto resolved to {cfg['precision']}, expected {want}")
    speed = []
    for precision in ("32", "bf16") if gpu else ():
        speed.append({"measure": f"efficientnet_lite0 224 px train step, batch 64, channels-last, {precision}",
                      "images_per_s": round(_throughput("efficientnet_lite0", 224, precision), 1)})
    print_table(rows, list(rows[0]), "trained on CUDA, checked on CPU")
    print_table(speed, ["measure", "images_per_s"], "GPU fine-tuning throughput")
    if not gpu:
        return 1 if failures else 0
    p = write_results("cuda_check", rows, {"speed": speed, "gpu": torch.cuda.get_device_name() if gpu else None,
                                           "failures": failures})
    print(f"written: {p}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
