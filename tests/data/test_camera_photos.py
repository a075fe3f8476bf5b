"""Photos as cameras write them (EXIF orientation), and the cache's RAM probe off Linux."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from inspectnet.data import cache
from inspectnet.data.decode import decode_image
from inspectnet.predict.base import BasePredictor


def _rotated_jpeg(path: Path) -> Path:
    """A JPEG whose pixels lie turned 90 degrees, with EXIF Orientation 6 ("rotate 90 CW to
    view"), as a phone held upright writes it. Upright it is 64x32 with a white top half."""
    upright = np.zeros((32, 64, 3), np.uint8)
    upright[:16] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 32 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


def _assert_upright(img: torch.Tensor) -> None:
    grey = img.float().mean(0)
    h = grey.shape[0]
    assert grey[: h // 2 - 2].mean() > 200 and grey[h // 2 + 2 :].mean() < 50, "image is not upright"


class _EchoPredictor(BasePredictor):
    card = SimpleNamespace(img_size=48, tta_views=1)

    def _probs(self, images: torch.Tensor) -> np.ndarray:
        return np.full((len(images), 2), 0.5)


def test_exif_orientation_is_applied_for_training_and_prediction(tmp_path: Path) -> None:
    path = _rotated_jpeg(tmp_path / "phone.jpg")
    with Image.open(path) as im:
        assert im.size == (32, 64) and im.getexif()[0x0112] == 6  # the file really is turned

    full = decode_image(path)
    assert full.shape == (3, 32, 64)
    _assert_upright(full)

    # The training cache (decode_all) and the predictor's loader both go through decode.
    images, bad = cache.decode_all([path], 48, progress=False)
    assert not bad
    _assert_upright(images[0])
    [[(_, predicted, err, _)]] = list(_EchoPredictor().predict_batches([path]))
    assert err is None
    _assert_upright(predicted)


def test_png_without_exif_keeps_the_fast_path_and_an_exif_png_is_turned(tmp_path: Path) -> None:
    upright = np.zeros((32, 64, 3), np.uint8)
    upright[:16] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "turned.png", exif=exif.tobytes())
    stored.save(tmp_path / "plain.png")
    _assert_upright(decode_image(tmp_path / "turned.png"))
    assert decode_image(tmp_path / "plain.png").shape == (3, 64, 32)  # no tag: as stored


def _no_meminfo(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise FileNotFoundError("/proc/meminfo")

    monkeypatch.setattr(cache, "open", refuse, raising=False)


def test_ram_probe_falls_back_to_psutil_then_sysconf_then_a_bounded_default(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache.available_mb() is not None  # Linux here: /proc/meminfo answers
    _no_meminfo(monkeypatch)
    monkeypatch.setattr(cache.os, "name", "posix")

    fake = types.ModuleType("psutil")
    fake.virtual_memory = lambda: SimpleNamespace(available=6 * 2**30)
    monkeypatch.setitem(sys.modules, "psutil", fake)
    assert cache.available_mb() == 6144

    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed: import raises ImportError
    pages = {"SC_AVPHYS_PAGES": 1024, "SC_PAGE_SIZE": 4096 * 1024}
    monkeypatch.setattr(cache.os, "sysconf", lambda name: pages[name])
    assert cache.available_mb() == 4096
    assert cache.default_cache_mb() == 2048

    def macos(name: str) -> int:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(cache.os, "sysconf", macos)
    assert cache.available_mb() is None
    assert cache.default_cache_mb() == cache.FALLBACK_AVAILABLE_MB / 2  # bounded, never inf
    monkeypatch.setattr(cache, "FALLBACK_AVAILABLE_MB", 2.0)  # a 1 MiB budget: 1.9 MiB spills
    images, spilled = cache.allocate_images(10, 256, spill_path=tmp_path / "cache.u8")
    assert spilled == tmp_path / "cache.u8" and images.shape == (10, 3, 256, 256)
