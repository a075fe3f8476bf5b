"""Heads on cached features: the L2 strength chosen by cross-validation, refitted on all."""

from __future__ import annotations

import torch

from inspectnet.train.heads import L2_GRID, fit_head_cv, stratified_folds


def _views(x: torch.Tensor, n: int = 4, noise: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return x[:, None] + noise * torch.randn(x.shape[0], n, x.shape[1], generator=g)


def test_folds_are_stratified_and_cover_every_image() -> None:
    y = torch.tensor([0] * 30 + [1] * 10)
    f = stratified_folds(y, 5)
    assert sorted(torch.bincount(f).tolist()) == [8] * 5
    for k in range(5):  # each fold holds 6 of class 0 and 2 of class 1
        assert torch.bincount(y[f == k], minlength=2).tolist() == [6, 2]


def test_cv_head_learns_a_signal_and_scores_it_out_of_fold() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 2
    x = torch.randn(120, 16, generator=g)
    x[:, 0] += 3 * (2 * y - 1)  # one informative feature
    head, info = fit_head_cv(_views(x), y, 2)
    assert info["oof_probs"].shape == (120, 2) and info["cv_folds"] == 5
    assert info["cv_accuracy"] > 0.9 and info["l2"] in L2_GRID
    with torch.no_grad():
        acc = float((head(x).argmax(1) == y).float().mean())
    assert acc > 0.95  # the refitted head takes raw (unstandardised) features


def test_cv_head_on_noise_chooses_the_strongest_l2() -> None:
    # Nothing to learn: out of fold, every weight only adds noise, so the choice is the
    # strongest regularisation and the out-of-fold loss stays near chance (log 2).
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    _, info = fit_head_cv(_views(torch.randn(80, 64, generator=g)), y, 2)
    assert info["l2"] == max(L2_GRID)
    assert 0.6 < info["cv_loss"] < 0.8
