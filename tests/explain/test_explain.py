"""Tests of inspectnet.explain: kernels, Grad-CAM, filters, feature maps, overlays."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from timm.layers import Conv2dSame
from PIL import Image

from inspectnet.explain import (
    KERNELS,
    convolve2d,
    convolve_panel,
    energy_inside,
    explain_image,
    feature_maps,
    first_layer_filters,
    format_matrix,
    grad_cam,
    grad_cam_batch,
    heatmap_png_bytes,
    load_kernel,
    overlay_heatmap,
    pointing_game,
    save_filter_grid,
)
from inspectnet.models import create_model

# ----------------------------------------------------------------------------- kernels

COURSE_INPUT = np.array(
    [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
)
COURSE_KERNEL = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])


def test_course_worked_example():
    out = convolve2d(COURSE_INPUT, COURSE_KERNEL, stride=1, padding="valid")
    np.testing.assert_array_equal(out, [[4, 3, 4], [2, 4, 3], [2, 3, 4]])
    assert format_matrix(out) == "[4 3 4]\n[2 4 3]\n[2 3 4]"


def test_no_kernel_flip_matches_torch_conv2d():
    # Cross-correlation, as Conv2d: an asymmetric kernel tells it apart from true convolution.
    rng = np.random.default_rng(0)
    img, k = rng.random((9, 11)), rng.standard_normal((3, 3))
    ref = torch.nn.functional.conv2d(
        torch.tensor(img)[None, None], torch.tensor(k)[None, None], stride=2, padding=1
    )[0, 0].numpy()
    np.testing.assert_allclose(convolve2d(img, k, stride=2, padding="same"), ref, atol=1e-12)


@pytest.mark.parametrize(
    ("padding", "stride", "shape"),
    [
        ("same", 1, (7, 10)),
        ("valid", 1, (5, 8)),
        ("valid", 2, (3, 4)),
        ("same", 2, (4, 5)),
    ],
)
def test_output_shapes(padding, stride, shape):
    assert convolve2d(np.ones((7, 10)), "box", stride=stride, padding=padding).shape == shape


def test_sobel_h_sees_horizontal_not_vertical_edges():
    horizontal = np.zeros((10, 10))
    horizontal[5:, :] = 1.0  # dark top, bright bottom: a horizontal edge
    vertical = horizontal.T.copy()
    assert np.abs(convolve2d(horizontal, "sobel-h")).max() == pytest.approx(4.0)
    assert np.abs(convolve2d(vertical, "sobel-h")).max() == 0.0
    assert np.abs(convolve2d(vertical, "sobel-v")).max() == pytest.approx(4.0)


def test_smoothing_kernels_sum_to_one_and_registry_is_read_only():
    assert load_kernel("box").sum() == pytest.approx(1.0)
    assert load_kernel("Gaussian").sum() == pytest.approx(1.0)
    classic = {"laplacian", "sobel-h", "sobel-v", "emboss", "sharpen", "box", "gaussian"}
    assert set(KERNELS) >= classic
    load_kernel("laplacian")[0, 0] = 99  # a copy: the registry must not change
    assert KERNELS["laplacian"][0, 0] == 0


def test_kernel_file_roundtrip(tmp_path):
    f = tmp_path / "k.txt"
    f.write_text("# my edge kernel\n1, 0, -1\n2 0 -2\n\n1,0,-1\n")
    np.testing.assert_array_equal(load_kernel(f), [[1, 0, -1], [2, 0, -2], [1, 0, -1]])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1 2 3\n4 5\n1 2 3\n", "ragged"),
        ("1 2 x\n4 5 6\n", "'x'"),
        ("\n# nothing\n", "empty"),
    ],
)
def test_bad_kernel_file_names_path_and_reason(tmp_path, text, why):
    f = tmp_path / "bad_kernel.txt"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        load_kernel(f)
    assert str(f) in str(e.value) and why in str(e.value)


def test_unknown_kernel_lists_known_ones():
    with pytest.raises(ValueError, match="sobel-h"):
        load_kernel("no-such-kernel")


def test_convolve_panel_writes_png(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)).save(src)
    out = convolve_panel(src, ["laplacian", "sobel-h"], tmp_path / "sub" / "panel.png")
    assert out.is_file() and Image.open(out).format == "PNG"


# ---------------------------------------------------------------------------- Grad-CAM

SQUARE = 12


def _square_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Dim noise; class 1 also holds a bright 12x12 square at a random place."""
    x = torch.rand(n, 3, 64, 64, generator=gen) * 0.3
    y = torch.randint(0, 2, (n,), generator=gen)
    for i in torch.nonzero(y).flatten().tolist():
        r, c = torch.randint(0, 64 - SQUARE + 1, (2,), generator=gen).tolist()
        x[i, :, r : r + SQUARE, c : c + SQUARE] = 1.0
    return x, y


@pytest.fixture(scope="module")
def square_model():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = create_model("seed-cnn", num_classes=2, pretrained=False, img_size=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    # One thread: on a shared 2-core box, two threads fighting other jobs ran 4x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(25):  # 1-3 s; 25 steps learn the task for every seed we tried
            x, y = _square_batch(16, gen)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    xv, yv = _square_batch(64, gen)
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    assert acc > 0.9, f"the tiny model did not learn the square task (val acc {acc:.2f})"
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
@pytest.mark.parametrize("where", [(40, 8), (6, 44)])
def test_gradcam_peaks_on_the_bright_square(square_model, method, where):
    r, c = where
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.3
    x[:, :, r : r + SQUARE, c : c + SQUARE] = 1.0
    mask = np.zeros((64, 64), bool)
    mask[r : r + SQUARE, c : c + SQUARE] = True
    cam = grad_cam(square_model, x, target_class=1, method=method)
    assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert pointing_game(cam, mask, dilate_px=4)
    assert energy_inside(cam, mask) > 5 * mask.mean()  # far more than a flat map's share


def test_gradcam_restores_modes_and_leaves_no_param_grads(square_model):
    m = square_model
    m.zero_grad(set_to_none=True)  # the fixture's training left gradients behind
    m.train()
    m.backbone.features.eval()  # a mixed state, as fine-tuning with frozen BatchNorm makes
    for p in m.parameters():
        p.requires_grad_(False)
    try:
        cam = grad_cam(m, torch.rand(1, 3, 64, 64))
        assert cam.shape == (64, 64)
        assert m.training and m.backbone.dropout.training and not m.backbone.features.training
        assert all(p.grad is None for p in m.parameters())
    finally:
        for p in m.parameters():
            p.requires_grad_(True)
        m.eval()


def test_gradcam_batch_matches_single_images(square_model):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    batch = grad_cam_batch(square_model, x, [0, 1, 1])
    assert batch.shape == (3, 64, 64)
    for i, t in enumerate([0, 1, 1]):
        np.testing.assert_allclose(batch[i], grad_cam(square_model, x[i : i + 1], t), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        grad_cam_batch(square_model, x, [0, 1, 2])


def test_gradcam_on_efficientnet_lite0():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, pretrained=False)
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    for method in ("gradcam", "gradcam++", "layercam"):
        cam = grad_cam(model, x, method=method)
        assert cam.shape == (64, 64) and cam.dtype == np.float32
        assert not np.isnan(cam).any() and cam.min() >= 0.0 and cam.max() <= 1.0


def _box_stack(*layers):
    """Convolutions with all-ones kernels and no bias: the input gradient of one output cell
    is then its receptive field, symmetric about the cell's true centre."""
    net = torch.nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.ones_(m.weight)
    return net


@pytest.mark.parametrize("layers", [
    lambda: [torch.nn.Conv2d(1, 1, 3, 2, 1, bias=False), torch.nn.Conv2d(1, 1, 5, 2, 2, bias=False),
             torch.nn.Conv2d(1, 1, 3, 2, 1, bias=False)],                        # EfficientNet/ResNet style
    lambda: [torch.nn.Conv2d(1, 1, 3, 1, 1, bias=False), torch.nn.AvgPool2d(2), torch.nn.Conv2d(1, 1, 3, 1, 1, bias=False),
             torch.nn.AvgPool2d(2), torch.nn.AvgPool2d(2)],                       # the seed CNN's conv + 2x2 pool
    lambda: [Conv2dSame(1, 1, 3, 2, bias=False), Conv2dSame(1, 1, 5, 2, bias=False),
             Conv2dSame(1, 1, 3, 2, bias=False)],                                 # TF "same" (tf_ models)
], ids=["symmetric", "pool", "tf-same"])
def test_heatmap_cells_sit_on_their_receptive_field_centres(layers):
    from inspectnet.explain.gradcam import _LayerTrace, upsample_to_input

    net = _box_stack(*layers())
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    with _LayerTrace(net) as trace:
        y = net(x)
    h = y.shape[-1]
    S, O = trace.grid(0, 64, h)
    (g,) = torch.autograd.grad(y[0, 0, 3, 4], x)
    rf = g[0, 0].abs()
    rows, cols = torch.arange(64.0), torch.arange(64.0)
    centre = ((rf.sum(1) * rows).sum() / rf.sum(), (rf.sum(0) * cols).sum() / rf.sum())
    assert centre[0].item() == pytest.approx(S * 3 + O) and centre[1].item() == pytest.approx(S * 4 + O)
    one_hot = torch.zeros(1, 1, h, h, dtype=torch.float64)
    one_hot[0, 0, 3, 4] = 1.0
    up = upsample_to_input(one_hot, (S, O), (S, O), (64, 64))[0, 0]
    peak = divmod(int(up.argmax()), 64)
    assert abs(peak[0] - centre[0].item()) <= 0.5 and abs(peak[1] - centre[1].item()) <= 0.5


def test_pointing_game_and_energy_by_hand():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    cam = np.zeros((20, 20))
    cam[7, 7] = 1.0
    assert pointing_game(cam, mask)
    cam_near = np.zeros((20, 20))
    cam_near[12, 7] = 1.0  # 3 px below the mask: inside a 4 px dilation, not a 2 px one
    assert pointing_game(cam_near, mask, dilate_px=4)
    assert not pointing_game(cam_near, mask, dilate_px=2)
    far = np.zeros((20, 20))
    far[18, 1] = 1.0
    assert not pointing_game(far, mask)
    assert not pointing_game(np.ones((20, 20)), mask)  # a flat map points nowhere

    half = np.zeros((20, 20))
    half[5, 5] = 3.0  # inside
    half[0, 0] = 1.0  # outside
    assert energy_inside(half, mask) == pytest.approx(0.75)
    assert energy_inside(np.zeros((20, 20)), mask) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        energy_inside(half, mask[:10])


# ------------------------------------------------------------- filters and feature maps


@pytest.fixture(scope="module")
def seed64():
    torch.manual_seed(0)
    return create_model("seed-cnn", num_classes=2, pretrained=False, img_size=64).eval()


def test_filter_grid_matches_first_conv(seed64, tmp_path):
    grid = first_layer_filters(seed64)
    # 16 filters of 3x3 in a 4x4 grid with 1 px between tiles: 4 * (3 + 1) + 1 = 17
    assert grid.shape == (17, 17, 3)
    assert grid.min() >= 0.0 and grid.max() <= 1.0
    w = seed64.backbone.features[0].weight.detach()[5].permute(1, 2, 0).numpy()
    tile = grid[1 + 4 * 1 : 1 + 4 * 1 + 3, 1 + 4 * 1 : 1 + 4 * 1 + 3]  # filter 5: row 1, col 1
    np.testing.assert_allclose(tile, (w - w.min()) / (w.max() - w.min()), atol=1e-6)
    assert Image.open(save_filter_grid(seed64, tmp_path / "f.png")).size[0] >= 17 * 8


def test_feature_maps_shape_and_not_clobbered_by_inplace_relu(seed64):
    x = torch.rand(1, 3, 64, 64)
    maps = feature_maps(seed64, x, "backbone.features.3")
    assert maps.shape == (32, 32, 32)
    assert (maps < 0).any()  # raw conv output: the next inplace ReLU must not have cut it
    assert feature_maps(seed64, x, "features.0").shape == (16, 64, 64)  # backbone's own name


def test_unknown_layer_lists_valid_names(seed64):
    with pytest.raises(ValueError) as e:
        feature_maps(seed64, torch.rand(1, 3, 64, 64), "backbone.nope")
    assert "backbone.nope" in str(e.value) and "backbone.features.3" in str(e.value)


# ----------------------------------------------------------------- overlays and explain


def test_overlay_and_png_bytes():
    img = np.zeros((8, 10, 3), np.uint8)
    cam = np.zeros((4, 5))
    cam[0, 0] = 1.0
    out = overlay_heatmap(img, cam, alpha=0.5)
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() != out[-1, -1].tolist()  # hot corner differs from the cold one
    np.testing.assert_array_equal(overlay_heatmap(img, cam, alpha=0.0), img)
    png = heatmap_png_bytes(cam)
    assert Image.open(io.BytesIO(png)).size == (5, 4)


def test_explain_image_writes_everything(seed64, tmp_path):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    res = explain_image(
        seed64,
        img,
        tmp_path,
        "part1",
        layer="backbone.features.3",
        class_names=["damaged", "intact"],
    )
    assert set(res["files"]) == {"gradcam", "gradcam++", "layercam", "filters", "maps"}
    assert res["files"]["gradcam++"].name == "part1_gradcam++.png"
    assert res["files"]["maps"].name == "part1_backbone.features.3_maps.png"
    assert all(p.is_file() for p in res["files"].values())
    assert Image.open(res["files"]["gradcam"]).size == (256, 256)  # enlarged for reading
    assert res["label"] in ("damaged", "intact")
    assert sum(res["probabilities"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        explain_image(seed64, img, tmp_path / "x", "p", layer="nope")
    assert not (tmp_path / "x").exists()  # a bad layer fails before anything is written
