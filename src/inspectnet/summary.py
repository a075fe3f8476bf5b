"""Keras-style model summary: layer name, type, output shape, parameters.

Names are the dotted module names, so they can be passed to ``explain --layer``.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def layer_rows(network: nn.Module, img_size: int, max_depth: int = 4) -> list[tuple[str, str, str, int]]:
    """``(name, type, output shape, own params)`` for each module up to ``max_depth`` dots deep
    that has no children deeper than that (leaves of the shown tree), in call order."""
    rows: list[tuple[str, str, str, int]] = []
    hooks = []

    def shown(name: str, m: nn.Module) -> bool:
        depth = name.count(".") + 1
        return bool(name) and (depth == max_depth or not any(True for _ in m.children()))

    def hook(name: str):
        def fn(m: nn.Module, _in: object, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else "?"
            n = sum(p.numel() for p in m.parameters())
            rows.append((name, type(m).__name__, str(shape).replace(",)", ")"), n))

        return fn

    for name, m in network.named_modules():
        if shown(name, m) and name.count(".") < max_depth:
            hooks.append(m.register_forward_hook(hook(name)))
    was = network.training
    network.eval()
    with torch.no_grad():
        network(torch.zeros(1, 3, img_size, img_size))
    network.train(was)
    for h in hooks:
        h.remove()
    return rows


def summarize(network: nn.Module, img_size: int, max_depth: int = 4) -> str:
    """The layer table of ``network`` for a ``(1, 3, img_size, img_size)`` input, as text."""
    rows = layer_rows(network, img_size, max_depth)
    w_name = max([len("Layer (name)")] + [len(r[0]) for r in rows]) + 2
    w_type = max([len("Type")] + [len(r[1]) for r in rows]) + 2
    w_shape = max([len("Output Shape")] + [len(r[2]) for r in rows]) + 2
    line = "-" * (w_name + w_type + w_shape + 12)
    out = [line, f"{'Layer (name)':<{w_name}}{'Type':<{w_type}}{'Output Shape':<{w_shape}}{'Param #':>12}", "=" * len(line)]
    for name, typ, shape, n in rows:
        out.append(f"{name:<{w_name}}{typ:<{w_type}}{shape:<{w_shape}}{n:>12,}")
    total = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    out += ["=" * len(line), f"Total params: {total:,} ({total * 4 / 2**20:.2f} MB)",
            f"Trainable params: {trainable:,}", f"Non-trainable params: {total - trainable:,}", line]
    return "\n".join(out)
