"""A hand-written minimal PyTorch training loop, the baseline of ``bench/framework_compare.py``.

What a user writes without inspectnet: plain fp32 eager, NCHW (no channels-last), no
Lightning, torchvision v2 transforms applied to each batch (one random draw per batch, as
v2 does for a batched tensor), the model from ``inspectnet.models.create_model`` so that
the architecture is identical. Run it with ``INSPECTNET_MALLOC=default`` (the parent does):
nothing here tunes the allocator.

    python bench/minimal_torch.py seed DATA.npz --epochs 3       # seed CNN, Adam, flip/rot/zoom
    python bench/minimal_torch.py finetune DATA.npz --epochs 2   # efficientnet_lite0, AdamW, BN in train mode

Reads uint8 ``x_train (N, 3, S, S)``, ``y_train``, ``x_test``, ``y_test``; prints one JSON
line with per-epoch seconds (no evaluation inside), warm images/s and test accuracy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    """Argmax accuracy of ``net`` (eval mode, fp32, NCHW) on uint8 images ``x``."""
    was = net.training
    net.eval()
    correct = 0
    for s in range(0, len(x), batch_size):
        logits = net(x[s : s + batch_size].float().div(255))
        correct += int((logits.argmax(1) == y[s : s + batch_size]).sum())
    net.train(was)
    return correct / max(len(x), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["seed", "finetune"])
    ap.add_argument("npz")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from torchvision.transforms import v2

    from inspectnet.models import create_model

    torch.manual_seed(args.seed)
    d = np.load(args.npz)
    x_train, y_train = torch.from_numpy(d["x_train"]), torch.from_numpy(d["y_train"]).long()
    x_test, y_test = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"]).long()
    size = x_train.shape[-1]
    n_classes = int(max(y_train.max(), y_test.max()) + 1)

    if args.mode == "seed":
        net = create_model("seed-cnn", n_classes, pretrained=False, img_size=size)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        aug = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                          v2.RandomAffine(degrees=36, scale=(0.9, 1.1))])
    else:
        net = create_model("efficientnet_lite0", n_classes, pretrained=True, img_size=size)
        head = list(net.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        base = [p for p in net.parameters() if id(p) not in head_ids]
        opt = torch.optim.AdamW([{"params": head, "lr": 1e-3}, {"params": base, "lr": 1e-4}], weight_decay=1e-4)
        aug = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
    net.train()  # BatchNorm in train mode: batch statistics, running stats updated

    g = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train),
                                         batch_size=args.batch_size, shuffle=True, generator=g,
                                         drop_last=len(x_train) % args.batch_size == 1)
    epochs: list[float] = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        for xb, yb in loader:
            x = aug(xb.float().div(255))
            loss = F.cross_entropy(net(x), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epochs.append(time.perf_counter() - t)
    acc = evaluate(net, x_test, y_test)
    warm = min(epochs[1:]) if len(epochs) > 1 else epochs[0]
    print(json.dumps({"train_images": len(x_train), "epoch_seconds": epochs, "warm_epoch_seconds": warm,
                      "images_per_s": len(x_train) / warm, "test_accuracy": acc,
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
