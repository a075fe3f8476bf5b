"""The bad-input matrix: every file or folder a user can hand us either loads, or fails with a
message that names the file and says why, and leaves nothing half-written behind."""

from __future__ import annotations

import csv
import errno
import io
import json
import re
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import torch
from annotated_types import Ge
from PIL import Image
from typer.testing import CliRunner

from conftest import make_toy_set
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
    assert res.exit_code == 1, res.output  # a data problem (2 is for usage errors)
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


# ------------------------------------------------------------------ the red team: every command, one matrix
#
# Each case builds a bad input for one command and names what the one-line error must say.
# For every case: no traceback, the documented exit status (0 ok, 1 a data/model/storage
# problem, 2 a usage error), and a message naming the file or the field.

runner = CliRunner()
RED_CASES: list = []


@dataclass
class Red:
    """What a case gets: a scratch folder, the shared tiny data set and trained run, monkeypatch."""

    tmp: Path
    data: Path
    base_run: Path
    mp: pytest.MonkeyPatch
    after: list[Callable[[], None]] = field(default_factory=list)

    def run(self) -> Path:
        """A private copy of the trained run, to break."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self.base_run, dst)
        return dst

    def card(self, run: Path | None = None, raw: object = None, **changes: object) -> Path:
        """A run copy whose model.json is ``raw`` (as is), or the card with ``changes``."""
        run = run or self.run()
        path = run / "model" / "model.json"
        if raw is None:
            raw = json.loads(path.read_text())
            raw.update(changes)  # type: ignore[union-attr]
            raw = {k: v for k, v in raw.items() if v is not _DROP}  # type: ignore[union-attr]
        path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
        return run

    def image(self) -> Path:
        return sorted((self.data / "damaged").glob("*.png"))[0]

    def yaml(self, text: str) -> Path:
        p = self.tmp / "bad.yaml"
        p.write_text(text)
        return p

    def a_file(self) -> Path:
        p = self.tmp / "a_file.txt"
        p.write_text("a regular file where a folder is expected\n")
        return p

    def no_space(self, target: str = "inspectnet.io.os.replace") -> None:
        """Every atomic rename (or the given function) fails as on a full disk."""
        def full(*a: object, **k: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.mp.setattr(target, full)


_DROP = object()


def red(cid: str, code: int) -> Callable:
    def deco(fn: Callable[[Red], tuple[list[str], list[str]]]) -> Callable:
        RED_CASES.append(pytest.param(fn, code, id=cid))
        return fn
    return deco


def _train_args(ctx: Red, data: Path | None = None, *extra: str) -> list[str]:
    return ["train", str(data or ctx.data), "--out", str(ctx.tmp / "out"), "--model", "seed-cnn",
            "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--patience", "0", "--device", "cpu",
            "--quiet", *extra]


def _no_tmp_files(root: Path) -> Callable[[], None]:
    def check() -> None:
        assert not list(root.rglob("*.tmp")), "a failed write left its temporary file behind"
    return check


# --- train: YAML config types and ranges (the file, the key, the value, what is allowed)

_TINY = {"model": "seed-cnn", "img_size": 32, "epochs": 1, "batch_size": 8, "patience": 0, "device": "cpu"}


def _yaml_case(cid: str, text: str, says: str) -> None:
    """A config file of tiny settings with one bad line (or ``text`` as it is, when it is no
    ``key: value`` line), given to ``train --config`` with no flag that would override it."""
    @red(cid, 2)
    def make(ctx: Red) -> tuple[list[str], list[str]]:
        key = text.split(":")[0]
        base = "".join(f"{k}: {v}\n" for k, v in _TINY.items() if k != key) if key.isidentifier() else ""
        cfg = ctx.yaml(base + text)
        return ["train", str(ctx.data), "--config", str(cfg), "--out", str(ctx.tmp / "out"), "--quiet"], [str(cfg), says]


_yaml_case("train-yaml-epochs-text", "epochs: ten\n", "epochs='ten' is not an integer")
_yaml_case("train-yaml-img-size-string", 'img_size: "96"\n', "img_size='96' is not an integer")
_yaml_case("train-yaml-batch-size-float", "batch_size: 8.5\n", "batch_size=8.5 is not an integer")
_yaml_case("train-yaml-flip-string", 'augment_flip: "no"\n', "augment_flip='no' is not a boolean")
_yaml_case("train-yaml-negative-lr", "lr: -1\n", "lr=-1 must be greater than 0")
_yaml_case("train-yaml-lr-without-dot", "lr: 1e-3\n", "lr='1e-3' is not a number")
_yaml_case("train-yaml-negative-weight-decay", "weight_decay: -0.1\n", "weight_decay=-0.1 must be at least 0")
_yaml_case("train-yaml-precision-int", "precision: 32\n", "precision=32 is not a string")
_yaml_case("train-yaml-fraction-range", "val_fraction: 0.7\n", "val_fraction=0.7 must be in [0, 0.5)")
_yaml_case("train-yaml-tta-views", "tta_views: 3\n", "tta_views=3 must be 1, 2, 4 or 8")
_yaml_case("train-yaml-target-recall", "target_recall: 1.5\n", "target_recall=1.5 must be in (0, 1]")
_yaml_case("train-yaml-unknown-key", "learning_rate: 0.1\n", "unknown config key(s) learning_rate")
_yaml_case("train-yaml-a-list", "- epochs\n- 3\n", "must hold a mapping")
_yaml_case("train-yaml-broken-syntax", "epochs: [1, 2\n", "is not valid YAML")


# --- train: flags

def _flag_case(cid: str, flags: list[str], says: list[str]) -> None:
    @red(cid, 2)
    def make(ctx: Red) -> tuple[list[str], list[str]]:
        return _train_args(ctx, None, *flags), says


_flag_case("train-flag-negative-lr", ["--lr", "-1"], ["--lr", "lr=-1.0 must be greater than 0"])
_flag_case("train-flag-batch-size-0", ["--batch-size", "0"], ["--batch-size", "batch_size=0 must be at least 1"])
_flag_case("train-flag-epochs-text", ["--epochs", "ten"], ["--epochs"])
_flag_case("train-flag-img-size-8", ["--img-size", "8"], ["--img-size", "img_size=8"])
_flag_case("train-flag-negative-seed", ["--seed", "-1"], ["--seed", "seed=-1"])


@red("train-missing-data", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _train_args(ctx, ctx.tmp / "nope"), [str(ctx.tmp / "nope"), "does not exist"]


@red("train-missing-config", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _train_args(ctx, None, "--config", str(ctx.tmp / "none.yaml")), ["none.yaml", "does not exist"]


# --- train: run folders that lose nothing, and storage

@red("train-refuses-to-replace-a-run", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    out = ctx.tmp / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.json").write_text("{}")
    (out / "metrics.json").write_text('{"accuracy": 0.9}')
    ctx.after.append(lambda: json.loads((out / "metrics.json").read_text()) == {"accuracy": 0.9} or pytest.fail("replaced"))
    return _train_args(ctx), [str(out), "--overwrite", "--resume"]


@red("train-out-below-a-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    f = ctx.a_file()
    args = _train_args(ctx)
    args[args.index("--out") + 1] = str(f / "run")
    return args, [str(f), "is a file, not a folder"]


@red("train-out-not-writable", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    if not sys.platform.startswith("linux") or not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys, where not even root may create a folder")
    args = _train_args(ctx)
    args[args.index("--out") + 1] = "/sys/inspectnet-red-team/run"
    return args, ["/sys", "not writable"]


@red("train-disk-full", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    ctx.no_space()
    ctx.after.append(_no_tmp_files(ctx.tmp / "out"))
    return _train_args(ctx), [str(ctx.tmp / "out"), "no space left"]


# --- train: the doctor's checks that can ruin a model

def _manifest(ctx: Red, rows: list[tuple[str, str, str]]) -> Path:
    m = ctx.tmp / "manifest.csv"
    _csv(m, ["path", "label", "split"], [list(r) for r in rows])
    return m


def _split_rows(ctx: Red) -> list[tuple[str, str, str]]:
    rows = []
    for c in ("damaged", "intact"):
        files = sorted((ctx.data / c).glob("*.png"))
        rows += [(str(f), c, "train" if i < 4 else "val" if i < 6 else "test") for i, f in enumerate(files)]
    return rows


@red("train-one-path-two-labels", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    rows = _split_rows(ctx)
    twice = rows[0][0]
    rows.append((twice, "intact", "train"))
    return _train_args(ctx, _manifest(ctx, rows)), [twice, "more than one label", "--allow-label-conflicts"]


@red("train-same-content-two-labels", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    data = ctx.tmp / "data"
    shutil.copytree(ctx.data, data)
    shutil.copy(data / "damaged" / "damaged_000.png", data / "intact" / "copy_of_damaged.png")
    return _train_args(ctx, data), ["copy_of_damaged.png", "damaged_000.png", "more than one label"]


@red("train-duplicate-rows-dropped", 0)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    rows = _split_rows(ctx)
    rows += [r for r in rows if r[2] == "train"][:8] * 2 + [r for r in rows if r[2] == "val"][:4]
    args = _train_args(ctx, _manifest(ctx, rows))
    args.remove("--quiet")
    return args, ["dropped 20 duplicate row(s)"]


@red("train-class-of-one-image", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    data = ctx.tmp / "data"
    shutil.copytree(ctx.data, data)
    (data / "chipped").mkdir()
    _save(data / "chipped" / "only.png", "png")
    return _train_args(ctx, data), ["'chipped' has 1 image(s)", "too small"]


@red("train-presplit-class-missing-from-val", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    rows = [(p, c, "train" if (c == "intact" and s == "val") else s) for p, c, s in _split_rows(ctx)]
    return _train_args(ctx, _manifest(ctx, rows)), ["'intact' has", "val 0", "too small"]


@red("train-empty-manifest", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _train_args(ctx, _manifest(ctx, [])), ["manifest.csv", "no images found"]


@red("train-manifest-unknown-split", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    rows = _split_rows(ctx)
    rows[3] = (rows[3][0], rows[3][1], "holdout")
    return _train_args(ctx, _manifest(ctx, rows)), ["manifest.csv:5", "unknown split 'holdout'"]


# --- predict

def _predict(ctx: Red, *extra: str, run: Path | None = None) -> list[str]:
    return ["predict", str(run or ctx.base_run), str(ctx.image()), "--engine", "torch", *extra]


@red("predict-batch-size-0", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _predict(ctx, "--batch-size", "0"), ["--batch-size"]


@red("predict-batch-size-negative", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _predict(ctx, "--batch-size", "-1"), ["--batch-size"]


@red("predict-workers-0", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _predict(ctx, "--workers", "0"), ["--workers"]


def _two_bad_of_three(ctx: Red) -> list[str]:
    _save(ctx.tmp / "cut.png", "truncated-png")
    _save(ctx.tmp / "empty.png", "zero-bytes")
    return ["predict", str(ctx.base_run), str(ctx.image()), str(ctx.tmp / "cut.png"), str(ctx.tmp / "empty.png"),
            "--engine", "torch", "--format", "csv"]


@red("predict-two-of-three-unreadable", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _two_bad_of_three(ctx), ["3 inspected", "2 unreadable", "cut.png", "empty.png", "--skip-bad"]


@red("predict-unreadable-with-skip-bad", 0)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _two_bad_of_three(ctx) + ["--skip-bad"], ["3 inspected", "2 unreadable"]


@red("predict-input-missing", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["predict", str(ctx.base_run), str(ctx.tmp / "gone.png")], ["gone.png", "not a file, folder or glob"]


@red("predict-corrupted-weights", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    run = ctx.run()
    w = run / "model" / "weights.safetensors"
    b = bytearray(w.read_bytes())
    mid = len(b) // 2
    b[mid : mid + 4096] = b"\xff" * 4096  # 4 KiB of a bad sector inside the tensors
    w.write_bytes(bytes(b))
    return _predict(ctx, run=run), [str(w), "corrupt"]


def _nan_weights(ctx: Red) -> Path:
    from inspectnet.bundle import load_model, save_bundle

    run = ctx.run()
    lm = load_model(run)
    name, tensor = next(iter(lm.network.state_dict().items()))
    with torch.no_grad():
        tensor.fill_(float("nan"))
    save_bundle(run, lm.network, lm.card)  # a consistent bundle of a run that diverged
    ctx.nan_tensor = name  # type: ignore[attr-defined]
    return run


@red("predict-nan-weights", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    run = _nan_weights(ctx)
    return _predict(ctx, run=run), ["weights.safetensors", "non-finite", ctx.nan_tensor]  # type: ignore[attr-defined]


@red("predict-nan-output-is-a-row-error", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    from inspectnet import Predictor  # the torch engine

    ctx.mp.setattr(Predictor, "_probs", lambda self, x: np.full((len(x), 2), np.nan, dtype=np.float32))

    def strict_json() -> None:
        for line in ctx.result.stdout.splitlines():  # type: ignore[attr-defined]
            row = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in a JSON row"))
            assert row["error"] and "not finite" in row["error"]
    ctx.after.append(strict_json)
    return _predict(ctx, "--format", "json"), ["not finite", "1 unreadable"]


def _card_case(cid: str, says: list[str], cmd: str = "predict", raw: object = None, **changes: object) -> None:
    @red(cid, 1)
    def make(ctx: Red) -> tuple[list[str], list[str]]:
        run = ctx.card(raw=raw, **changes)
        card = str(run / "model" / "model.json")
        if cmd == "predict":
            return _predict(ctx, run=run), [card, *says]
        if cmd == "evaluate":
            return ["evaluate", str(run), "--no-report"], [card, *says]
        if cmd == "explain":
            return ["explain", str(run), str(ctx.image()), "--out", str(ctx.tmp / "x")], [card, *says]
        return ["export", str(run)], [card, *says]


_card_case("card-format-version-string", ["format_version='2' is not an integer"], format_version="2")
_card_case("card-positive-class-unknown", ["positive_class='cracked' is not one of the classes"],
           positive_class="cracked")
_card_case("card-img-size-0", ["img_size=0 must be at least 16"], cmd="evaluate", img_size=0)
_card_case("card-is-a-list", ["must hold a JSON object", "not a list"], cmd="export", raw="[1, 2, 3]")
_card_case("card-not-json", ["is not valid JSON"], cmd="export", raw='{"architecture": ')
_card_case("card-threshold-above-1", ["threshold=1.5 must be in [0, 1]"], threshold=1.5)
_card_case("card-threshold-nan", ["threshold=nan is not a finite number"], cmd="evaluate", threshold=float("nan"))
_card_case("card-one-class", ["classes=['damaged'] must name at least 2 classes"], cmd="explain",
           classes=["damaged"])
_card_case("card-mean-length", ["mean=[0.5, 0.5] has 2 value(s); channels=3 needs 3"], mean=[0.5, 0.5])
_card_case("card-tta-views", ["tta_views=5 must be 1, 2, 4 or 8"], tta_views=5)
_card_case("card-missing-architecture", ["architecture is missing"], cmd="evaluate", architecture=_DROP)


@red("predict-not-a-run", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    (ctx.tmp / "empty").mkdir()
    return ["predict", str(ctx.tmp / "empty"), str(ctx.image())], [str(ctx.tmp / "empty"), "not a run folder"]


@red("predict-run-missing", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["predict", str(ctx.tmp / "nope"), str(ctx.image())], [str(ctx.tmp / "nope"), "not a run folder"]


@red("predict-output-below-a-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    f = ctx.a_file()
    return _predict(ctx, "--output", str(f / "rows.csv")), [str(f), "is a file, not a folder"]


@red("predict-output-disk-full", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    from inspectnet.predict import ResultWriter

    ctx.no_space(target=f"{ResultWriter.__module__}.ResultWriter._write_line")  # the row writer bypasses io.py
    return _predict(ctx, "--output", str(ctx.tmp / "rows.csv")), ["rows.csv", "no space left"]


@red("predict-output-suffix", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return _predict(ctx, "--output", str(ctx.tmp / "rows.txt")), ["rows.txt", "use a .csv or .jsonl file"]


# --- evaluate

@red("evaluate-nan-weights", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    run = _nan_weights(ctx)
    return ["evaluate", str(run), "--no-report"], ["weights.safetensors", "non-finite"]


@red("evaluate-out-below-a-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    f = ctx.a_file()
    return ["evaluate", str(ctx.base_run), "--out", str(f / "m.json"), "--no-report"], [str(f), "is a file, not a folder"]


@red("evaluate-out-not-writable", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    if not sys.platform.startswith("linux") or not Path("/sys").is_dir():
        pytest.skip("needs Linux's /sys, where not even root may create a folder")
    return (["evaluate", str(ctx.base_run), "--out", "/sys/inspectnet-red-team/m.json", "--no-report"],
            ["/sys", "not writable"])


@red("evaluate-out-disk-full-keeps-the-old-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    target = ctx.tmp / "metrics" / "m.json"
    target.parent.mkdir()
    target.write_text('{"old": true}\n')
    ctx.no_space()
    ctx.after.append(lambda: target.read_text() == '{"old": true}\n' or pytest.fail("the old file was damaged"))
    ctx.after.append(_no_tmp_files(target.parent))
    return ["evaluate", str(ctx.base_run), "--out", str(target), "--no-report"], [str(target), "no space left"]


@red("evaluate-run-missing", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["evaluate", str(ctx.tmp / "nope")], [str(ctx.tmp / "nope"), "not a run folder"]


@red("evaluate-unknown-split", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["evaluate", str(ctx.base_run), "--split", "holdout"], ["--split", "holdout"]


# --- explain

def _explain_bad_image(cid: str, kind: str, says: str) -> None:
    @red(cid, 1)
    def make(ctx: Red) -> tuple[list[str], list[str]]:
        img = _save(ctx.tmp / "part.png", kind)
        return ["explain", str(ctx.base_run), str(img), "--out", str(ctx.tmp / "x")], [str(img), says]


_explain_bad_image("explain-truncated-png", "truncated-png", "truncated")
_explain_bad_image("explain-zero-bytes", "zero-bytes", "0 bytes")
_explain_bad_image("explain-text-as-png", "text-as-png", "not an image")


@red("explain-out-below-a-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    f = ctx.a_file()
    return ["explain", str(ctx.base_run), str(ctx.image()), "--out", str(f / "x")], [str(f), "is a file, not a folder"]


# --- export

@red("export-nan-weights", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["export", str(_nan_weights(ctx))], ["weights.safetensors", "non-finite"]


@red("export-old-opset", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["export", str(ctx.run()), "--opset", "5"], ["--opset 5", "too old"]


@red("export-disk-full", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    run = ctx.run()
    ctx.no_space()
    ctx.after.append(lambda: not (run / "model" / "model.onnx").exists() or pytest.fail("half an export"))
    ctx.after.append(_no_tmp_files(run))
    return ["export", str(run)], ["model.onnx", "no space left"]


@red("export-run-missing", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["export", str(ctx.tmp / "nope")], [str(ctx.tmp / "nope"), "not a run folder"]


# --- doctor

@red("doctor-missing-data", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["doctor", str(ctx.tmp / "nope"), "-q"], [str(ctx.tmp / "nope"), "does not exist"]


@red("doctor-near-threshold-range", 2)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    return ["doctor", str(ctx.data), "-q", "--near-threshold", "99"], ["near-threshold 99", "0..32"]


@red("doctor-manifest-without-label-column", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    m = _csv(ctx.tmp / "m.csv", ["path", "class"], [[str(ctx.image()), "damaged"]])
    return ["doctor", str(m), "-q"], [str(m), "missing column(s) label"]


@red("doctor-json-below-a-file", 1)
def _(ctx: Red) -> tuple[list[str], list[str]]:
    f = ctx.a_file()
    return ["doctor", str(ctx.data), "-q", "--json", str(f / "r.json")], [str(f), "is a file, not a folder"]


@pytest.fixture(scope="module")
def red_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_set(tmp_path_factory.mktemp("red") / "data", n_per_class=8, size=32)


@pytest.fixture(scope="module")
def red_run(red_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspectnet import train

    run = tmp_path_factory.mktemp("red-run") / "run"
    train(red_data, out=run, approach="scratch", model="seed-cnn", img_size=32, epochs=1, batch_size=8, patience=0,
          device="cpu", quiet=True)
    return run


@pytest.mark.parametrize("make,code", RED_CASES)
def test_red_team(make: Callable[[Red], tuple[list[str], list[str]]], code: int, red_data: Path, red_run: Path,
                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECTNET_DEBUG", raising=False)
    ctx = Red(tmp_path, red_data, red_run, monkeypatch)
    argv, says = make(ctx)
    res = runner.invoke(app, argv)
    ctx.result = res  # type: ignore[attr-defined]
    monkeypatch.undo()
    out = res.output
    assert "Traceback" not in out and (res.exception is None or isinstance(res.exception, SystemExit)), \
        f"{type(res.exception).__name__}: {res.exception}\n{out}"
    assert res.exit_code == code, out
    for s in says:
        assert s in out, f"{s!r} not in:\n{out}"
    for check in ctx.after:
        check()


def test_the_red_team_is_large_enough() -> None:
    commands = {p.id.split("-")[0] for p in RED_CASES}
    assert len(RED_CASES) >= 40 and {"train", "predict", "evaluate", "explain", "export", "doctor"} <= commands


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: ten\n")
    res = runner.invoke(app, ["--debug", "train", str(tmp_path), "--config", str(cfg)])
    assert res.exit_code != 0 and res.exception is not None and not isinstance(res.exception, SystemExit)
    res = runner.invoke(app, ["train", str(tmp_path), "--config", str(cfg)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)


def test_an_unexpected_error_is_one_line_and_status_1(red_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inspectnet.predict as predict_pkg

    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(predict_pkg, "make_predictor", boom)
    monkeypatch.delenv("INSPECTNET_DEBUG", raising=False)
    res = runner.invoke(app, ["predict", str(red_run), str(red_run / "report.html")])
    assert res.exit_code == 1 and "internal error: ZeroDivisionError: a bug" in res.output
    assert "--debug" in res.output and "Traceback" not in res.output


def test_python_api_validates_like_the_cli(red_data: Path, tmp_path: Path) -> None:
    from inspectnet.config import TrainConfig
    from inspectnet.errors import ConfigError
    from inspectnet.train.run import train

    for kw, says in (({"epochs": "ten"}, "epochs='ten' is not an integer"),
                     ({"batch_size": 8.5}, "batch_size=8.5 is not an integer"),
                     ({"augment_flip": "no"}, "augment_flip='no' is not a boolean"),
                     ({"lr": -1.0}, "lr=-1.0 must be greater than 0")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            train(red_data, out=tmp_path / "r", quiet=True, **kw)
    assert TrainConfig(lr=1).validate().lr == 1  # an int where a float is due is fine
    with pytest.raises(ConfigError, match="tta_views"):
        TrainConfig(tta_views=3).validate()


def test_a_field_added_later_is_validated_from_its_type_hint() -> None:
    from inspectnet.config import field_problems

    assert field_problems(Later, {"temperature": "hot"}) == [("temperature", "temperature='hot' is not a number")]
    assert field_problems(Later, {"folds": 1}) == [("folds", "folds=1 must be at least 2")]
    assert field_problems(Later, {"temperature": 2, "folds": 3}) == []


@dataclass
class Later:
    """A dataclass as a colleague might grow one: nothing but hints."""

    temperature: float = 1.0
    folds: Annotated[int, Ge(2)] = 5


def test_decode_error_is_a_data_error() -> None:
    from inspectnet.errors import InspectnetError

    assert issubclass(DecodeError, DataError) and issubclass(DecodeError, InspectnetError)


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectnet.errors import StorageError
    from inspectnet.io import atomic_write_json, atomic_write_text

    target = tmp_path / "f.json"
    atomic_write_json(target, {"v": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"v": 1, "nan": None}  # NaN is not JSON: null
    monkeypatch.setattr("inspectnet.io.os.replace", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(StorageError, match=r"f\.json: no space left on the device \(2\.0 KiB needed, .* free\)"):
        atomic_write_text(target, "x" * 2048)
    assert json.loads(target.read_text())["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_full_disk_under_safetensors_keeps_the_old_bundle(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectnet.bundle import load_model, save_bundle
    from inspectnet.errors import StorageError

    w = bundle / "model" / "weights.safetensors"
    before = w.read_bytes()
    lm = load_model(bundle)

    def full(*a: object, **k: object) -> None:  # what safetensors raises: its own type, the OS error in the text
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("inspectnet.bundle.save_file", full)
    with pytest.raises(StorageError, match=r"weights\.safetensors: no space left on the device \(.* needed, .* free\)"):
        save_bundle(bundle, lm.network, lm.card)
    assert w.read_bytes() == before and not list(bundle.rglob("*.tmp"))
    load_model(bundle)  # the previous bundle still loads
