"""The bad-input matrix: every file or folder a user can hand us either loads, or fails with a
message that names the file and says why, and leaves nothing half-written behind."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from inspectnet.cli import app
from inspectnet.data.cache import build_cache
from inspectnet.data.decode import MAX_PIXELS, DecodeError, decode_image
from inspectnet.data.sources import Sample, discover
from inspectnet.errors import DataError, ModelError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8)


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A valid PNG whose IHDR claims ``w`` x ``h``: a 150-byte file, no gigabytes allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _save(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        Image.fromarray(RGB).save(path)
    elif kind == "jpeg":
        Image.fromarray(RGB).save(path, format="JPEG", quality=90)
    elif kind in ("truncated-png", "truncated-jpeg"):
        buf = io.BytesIO()
        Image.fromarray(RGB).save(buf, format="PNG" if kind == "truncated-png" else "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # a copy cut off mid-transfer
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "text-as-png":
        path.write_text("path,label\nimg_001.png,intact\n")
    elif kind == "bomb":
        _png_header_only(path, 20000, 20000)
    elif kind == "16bit-tiff":
        Image.fromarray(RNG.integers(0, 65535, (30, 20)).astype(np.uint16)).save(path)
    elif kind == "cmyk-jpeg":
        Image.fromarray(RGB).convert("CMYK").save(path, format="JPEG")
    elif kind == "palette-transparent-png":
        p = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        p.save(path, transparency=0)
    elif kind == "animated-gif":
        frames = [Image.fromarray(np.full((20, 24, 3), v, np.uint8)) for v in (10, 200, 120)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    else:
        raise ValueError(kind)
    return path


# ------------------------------------------------------------------ decode: loads or says why

@pytest.mark.parametrize("kind,name,shape,mean", [
    ("16bit-tiff", "g16.tif", (3, 30, 20), None),
    ("cmyk-jpeg", "cmyk.jpg", (3, 40, 50), None),
    ("palette-transparent-png", "pal.png", (3, 40, 50), None),
    ("animated-gif", "anim.gif", (3, 20, 24), 10),  # the first frame, not a blend or the last
])
def test_odd_modes_load_as_three_channels(tmp_path: Path, kind: str, name: str, shape: tuple, mean: int | None) -> None:
    img = decode_image(_save(tmp_path / name, kind))
    assert img.dtype == torch.uint8 and tuple(img.shape) == shape
    assert img.float().std() > 0 or mean is not None
    if mean is not None:
        assert int(img.float().mean()) == mean


def test_16bit_uses_the_full_range_not_clipped_white(tmp_path: Path) -> None:
    img = decode_image(_save(tmp_path / "g16.tif", "16bit-tiff"))
    assert 60 < img.float().mean() < 200  # 0..65535 noise scaled to 0..255, mean ~127


@pytest.mark.parametrize("kind,name,why", [
    ("truncated-png", "t.png", "truncated"),
    ("truncated-jpeg", "t.jpg", "truncated"),
    ("zero-bytes", "z.png", "0 bytes"),
    ("text-as-png", "text.png", "not an image"),
    ("bomb", "bomb.png", "too large"),
])
def test_bad_files_raise_decode_error_with_reason(tmp_path: Path, kind: str, name: str, why: str) -> None:
    p = _save(tmp_path / name, kind)
    with pytest.raises(DecodeError, match=why):
        decode_image(p)


def test_bomb_is_refused_without_allocating(tmp_path: Path) -> None:
    p = _save(tmp_path / "bomb.png", "bomb")
    assert p.stat().st_size < 1000 and 20000 * 20000 > MAX_PIXELS
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError):
        decode_image(p)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: far below 400 MB


# ------------------------------------------------------------------ cache: every bad file named

def _two_class(root: Path, n: int = 6) -> Path:
    # Distinct random images: identical ones would (rightly) be refused as split leakage.
    rng = np.random.default_rng(0)
    for c in ("damaged", "intact"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / c / f"{c}_{i}.png")
    return root


def test_build_cache_names_every_bad_file_with_its_reason(tmp_path: Path) -> None:
    root = _two_class(tmp_path / "d")
    bad = {
        "t.png": ("truncated-png", "truncated"), "t.jpg": ("truncated-jpeg", "truncated"),
        "z.png": ("zero-bytes", "0 bytes"), "text.png": ("text-as-png", "not an image"),
        "bomb.png": ("bomb", "too large"),
    }
    for name, (kind, _) in bad.items():
        _save(root / "intact" / name, kind)
    for name in ("g16.tif", "cmyk.jpg"):  # odd but good: must not be listed
        _save(root / "damaged" / name, {"g16.tif": "16bit-tiff", "cmyk.jpg": "cmyk-jpeg"}[name])
    samples = [Sample(s.path, s.label, "train") for s in discover(root)]
    with pytest.raises(DataError) as e:
        build_cache(samples, ["damaged", "intact"], 16, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{len(bad)} image(s) cannot be read")
    lines = {ln.strip().split(": ", 1)[0]: ln for ln in msg.splitlines()[1:]}
    for name, (_, why) in bad.items():
        line = lines[str(root / "intact" / name)]
        assert why in line, line
    assert "g16.tif" not in msg and "cmyk.jpg" not in msg
    cache, skipped = build_cache(samples, ["damaged", "intact"], 16, skip_bad=True, progress=False)
    assert len(skipped) == len(bad) and len(cache["train"]) == len(samples) - len(bad)


# ------------------------------------------------------------------ sources: CSV and folders

def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_missing_column_names_the_csv_and_the_column(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", "png")
    m = _csv(tmp_path / "m.csv", ["path", "class"], [["a.png", "intact"]])
    with pytest.raises(DataError, match=r"m\.csv: missing column\(s\) label; found path, class"):
        discover(m)


def test_csv_unknown_split_names_the_line_and_allowed_values(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", "png")
    _save(tmp_path / "b.png", "png")
    m = _csv(tmp_path / "m.csv", ["path", "label", "split"],
             [["a.png", "intact", "train"], ["b.png", "damaged", "holdout"]])
    with pytest.raises(DataError, match=r"m\.csv:3: unknown split 'holdout'; allowed: train, val, test"):
        discover(m)


def test_csv_missing_path_names_the_image(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", "png")
    m = _csv(tmp_path / "m.csv", ["path", "label"], [["a.png", "intact"], ["imgs/gone.png", "damaged"]])
    with pytest.raises(DataError, match=r"m\.csv:3: image 'imgs/gone\.png' does not exist"):
        discover(m)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "intact" / "a.png", "png")
    (tmp_path / "damaged").mkdir()
    with pytest.raises(DataError, match=r"class folder .*damaged holds no images"):
        discover(tmp_path)


def test_single_class_is_refused_by_name(tmp_path: Path) -> None:
    _save(tmp_path / "intact" / "a.png", "png")
    with pytest.raises(DataError, match=r"only one class \('intact'\)"):
        discover(tmp_path)


# ------------------------------------------------------------------ model bundle

@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    from inspectnet.bundle import ModelCard, save_bundle
    from inspectnet.models import create_model

    net = create_model("seed-cnn", 2, pretrained=False, img_size=32)
    card = ModelCard(architecture="seed-cnn", classes=["damaged", "intact"], positive_class="damaged", img_size=32,
                     mean=[0.5] * 3, std=[0.5] * 3, versions={"inspectnet": "test"})
    save_bundle(tmp_path / "run", net, card)
    return tmp_path / "run"


def test_bundle_loads(bundle: Path) -> None:
    from inspectnet.bundle import load_model

    assert load_model(bundle).card.classes == ["damaged", "intact"]


def test_corrupt_weights_raise_model_error_naming_the_file(bundle: Path) -> None:
    from inspectnet.bundle import load_model

    w = bundle / "model" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelError, match=r"weights\.safetensors is corrupt") as e:
        load_model(bundle)
    assert str(w) in str(e.value)


def test_future_format_version_names_the_file(bundle: Path) -> None:
    from inspectnet.bundle import load_model

    card = bundle / "model" / "model.json"
    raw = json.loads(card.read_text())
    raw["format_version"] = 99
    card.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"format_version 99.*upgrade inspectnet") as e:
        load_model(bundle)
    assert str(card) in str(e.value)


# ------------------------------------------------------------------ train, end to end via the CLI

def _train(data: Path, out: Path) -> object:
    return CliRunner().invoke(app, ["train", str(data), "--out", str(out), "--approach", "scratch",
                                    "--model", "seed-cnn",
                                    "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                                    "--patience", "0", "--quiet"])


def test_train_stops_before_training_naming_the_bad_file(tmp_path: Path) -> None:
    data = _two_class(tmp_path / "d")
    _save(data / "damaged" / "broken.jpg", "truncated-jpeg")
    res = _train(data, tmp_path / "run")
    assert res.exit_code == 2, res.output
    assert "broken.jpg" in res.output and "truncated" in res.output and "--skip-bad" in res.output
    assert not (tmp_path / "run" / "model").exists()
    assert not list((tmp_path / "run").rglob("*.tmp"))  # no half-written file left behind


def test_path_with_spaces_and_non_ascii_trains(tmp_path: Path) -> None:
    data = tmp_path / "Prüfung 2024 ü" / "Wendeschneidplatten ø"
    for c in ("beschädigt", "intakt"):
        for i in range(8):
            rgb = RNG.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            (data / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(data / c / f"Bild {i} – µ.png")
    res = _train(data, tmp_path / "run ü")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run ü" / "model" / "weights.safetensors").is_file()
    card = json.loads((tmp_path / "run ü" / "model" / "model.json").read_text())
    assert card["classes"] == ["beschädigt", "intakt"]
