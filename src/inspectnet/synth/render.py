"""Rendering one sample: tray, clutter, insert, damage, distractors, camera.

Every image draws its randomness from generators seeded by ``(seed, index, part)``: the
pose, tray, light, clutter and distractors do not depend on the label, so
``render_sample(i, "intact")`` and ``render_sample(i, "damaged")`` show the same insert in the
same scene and differ only where the damage is (and in the cast shadow of broken parts).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import cv2
import numpy as np

from inspectnet.synth.config import (
    DAMAGE_MODES,
    LABELS,
    SynthArgumentError,
    SynthConfig,
    check_difficulty,
    check_jpeg_quality,
    check_size,
)
from inspectnet.synth.damage import DAMAGE_FUNCS
from inspectnet.synth.insert import (
    InsertLayers,
    Light,
    Look,
    build_insert,
    cast_shadow,
    fill_poly,
    lowfreq,
    random_look,
    shade_insert,
)
from inspectnet.synth.shapes import Outline, make_outline, pose_matrix

#: Tray -> (RGB, brushed texture?, grain amplitude).
TRAY_LOOK: dict[str, tuple[tuple[float, float, float], bool, float]] = {
    "anodised_black": ((0.15, 0.15, 0.16), True, 0.03),
    "anodised_grey": ((0.40, 0.41, 0.43), True, 0.03),
    "plastic_light": ((0.72, 0.72, 0.70), False, 0.02),
    "plastic_blue": ((0.18, 0.30, 0.48), False, 0.025),
    "mat_green": ((0.20, 0.34, 0.26), False, 0.05),
}

# Sub-stream ids of the per-image random generators.
_TRAY, _LIGHT, _INSERT, _CLUTTER, _DAMAGE, _DISTRACT, _CAMERA, _OCCLUDE = range(8)


def _rng(seed: int, index: int, part: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, part])


def make_tray(rng: np.random.Generator, size: int, cfg: SynthConfig) -> tuple[np.ndarray, str]:
    """Textured tray: mottling, grain, brushing for anodised metal, and a few scratches."""
    name = str(rng.choice(cfg.trays))
    rgb, brushed, grain = TRAY_LOOK[name]
    base = (
        np.array(rgb, np.float32)
        * rng.uniform(0.96, 1.04, 3).astype(np.float32)
        * rng.uniform(0.85, 1.15)
    )
    lum = 1.0 + 0.06 * lowfreq(rng, size, size, 5) + 0.02 * lowfreq(rng, size, size, 17)
    lum += grain * _uniform_noise(rng, (size, size))
    if brushed:
        streak = rng.standard_normal((size, max(2, size // 48)), np.float32)
        streak = cv2.resize(streak, (size, size), interpolation=cv2.INTER_LINEAR)
        lum += 0.03 * (streak if rng.random() < 0.5 else streak.T)
    img = base[None, None, :] * lum[..., None]
    n = rng.poisson(cfg.tray_scratches)
    if n:
        canvas = np.zeros((size, size), np.uint8)
        for _ in range(n):
            p0 = rng.uniform(0, size, 2)
            ang = rng.uniform(0, np.pi)
            ln = rng.uniform(0.06, 0.35) * size
            bend = rng.normal(0, 0.05 * ln)
            d = np.array([np.cos(ang), np.sin(ang)])
            pts = np.array([p0, p0 + d * ln / 2 + np.array([-d[1], d[0]]) * bend, p0 + d * ln])
            cv2.polylines(
                canvas,
                [np.round(pts * 16).astype(np.int32)],
                False,
                int(rng.integers(60, 160)),
                1,
                cv2.LINE_AA,
                4,
            )
        img += (canvas.astype(np.float32) * (0.28 / 255.0))[..., None]
    return img, name


def _place_insert(
    rng: np.random.Generator,
    cfg: SynthConfig,
    size: int,
    shape: str,
    center: np.ndarray,
    radius: float,
    fit: bool = False,
):
    """Outline of an insert with a random pose around ``center``.

    With ``fit`` the insert is shrunk and shifted so that all of it is in view (damage must
    never be cut off by the image border).
    """
    m = pose_matrix(
        radius,
        rng.uniform(0, np.deg2rad(cfg.rotation_range)),
        rng.uniform(0, cfg.tilt_max),
        rng.uniform(0, np.pi),
        rng.uniform(-cfg.shear_max, cfg.shear_max),
    )
    corner_r = rng.uniform(*cfg.corner_radius)
    outline = make_outline(shape, corner_r, m, center)
    if not fit:
        return outline
    margin = 3 + 0.02 * size
    ext = outline.pts.max(0) - outline.pts.min(0)
    if ext.max() > size - 2 * margin:
        outline = make_outline(shape, corner_r, m * ((size - 2 * margin) / ext.max()), center)
    lo, hi = outline.pts.min(0), outline.pts.max(0)
    shift = np.clip(lo, margin, None) - lo + np.clip(hi, None, size - margin) - hi
    outline.pts = outline.pts + shift
    outline.center = outline.center + shift
    return outline


def _draw_insert(img, rng, cfg, size, outline, coating, light, shadow_k, damage=None):
    """Build, optionally damage, shade and composite one insert; return its layers."""
    look = random_look(rng, coating, cfg.hole_prob, cfg.chipbreaker_prob)
    lay = build_insert(outline, look, size, rng)
    if lay.w <= 2 or lay.h <= 2:
        return None, look
    if damage is not None:
        damage(lay, look)
    sl = lay.slc
    tray = img[sl]
    tray *= (1.0 - cast_shadow(lay, light, shadow_k))[..., None]
    rgb, alpha = shade_insert(lay, look, light, tray)
    img[sl] = tray * (1.0 - alpha[..., None]) + rgb * alpha[..., None]
    return lay, look


def _neighbour(img, rng, cfg, size, light, shadow_k, main_center, main_r):
    """Part of a neighbouring insert at the image border, not touching the main one."""
    r = rng.uniform(0.25, 0.4) * size
    for _ in range(6):
        g = rng.uniform(0, 2 * np.pi)
        c = size / 2 + np.array([np.cos(g), np.sin(g)]) * (size / 2 + r * rng.uniform(-0.4, 0.3))
        if main_center is None or np.linalg.norm(c - main_center) > main_r + r + 6:
            break
    else:
        return
    o = _place_insert(rng, cfg, size, str(rng.choice(cfg.shapes)), c, r)
    _draw_insert(img, rng, cfg, size, o, str(rng.choice(cfg.coatings)), light, shadow_k)


def _fixture(img, rng, size, light, keep_out: np.ndarray | None):
    """A machined rail along one image border, with a bright chamfer and a cast shadow."""
    side = int(rng.integers(4))
    w = rng.uniform(0.05, 0.13) * size
    tilt = rng.uniform(-0.08, 0.08) * size
    # Rail along the top border, rotated into place by transposes/flips below.
    pts = np.array([[-5, -5], [size + 5, -5], [size + 5, w - tilt], [-5, w + tilt]], np.float64)
    rot = {
        0: lambda p: p,
        1: lambda p: p[:, ::-1],
        2: lambda p: np.c_[p[:, 0], size - p[:, 1]],
        3: lambda p: np.c_[size - p[:, 1], p[:, 0]],
    }[side]
    poly = rot(pts)
    rail = fill_poly(size, size, poly)
    if keep_out is not None and float((rail * keep_out).sum()) > 0:
        return
    shadow = cv2.GaussianBlur(
        cv2.dilate(rail, np.ones((5, 5), np.uint8), iterations=max(1, size // 128)),
        (0, 0),
        2 + size / 128,
    )
    img *= (1.0 - 0.5 * shadow * (1.0 - rail))[..., None]
    grey = rng.uniform(0.35, 0.7)
    tex = 1.0 + 0.03 * _uniform_noise(rng, (size, size))
    chamfer = np.clip(
        cv2.dilate(rail, np.ones((3, 3), np.uint8)) - cv2.erode(rail, np.ones((5, 5), np.uint8)),
        0,
        1,
    )
    col = grey * tex + 0.35 * chamfer * (0.5 + float(light.vec[2]))
    img[:] = img * (1.0 - rail[..., None]) + (col * rail)[..., None]


def _occluder(rng, size, outline, depth):
    """Polygon and grey level of a gripper finger reaching into the insert from outside.

    ``depth`` is the largest reach into the insert as a fraction of its radius.
    """
    g = rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(g), np.sin(g)])
    reach = np.max((outline.pts - outline.center) @ d)
    tip = outline.center + d * reach * (1.0 - rng.uniform(0.1, 1.0) * depth)
    half = rng.uniform(0.12, 0.2) * outline.radius_px
    t = np.array([-d[1], d[0]])
    arc = np.linspace(np.pi / 2, 3 * np.pi / 2, 9)
    nose = tip + half * (np.cos(arc)[:, None] * d + np.sin(arc)[:, None] * t)
    far = tip + d * 2 * size
    poly = np.vstack([nose, far - t * half, far + t * half])
    return poly, rng.uniform(0.12, 0.3)


def _distractors(img, rng, cfg, size, mult, insert_mask):
    """Harmless marks in both classes: dust, lint, a reflection streak, a soft smudge."""
    s = size / 256.0
    dark = np.zeros((size, size), np.uint8)
    light = np.zeros((size, size), np.uint8)
    rate = cfg.distractor_rate * mult
    for _ in range(rng.poisson(rate * 1.2)):  # dust specks
        p = np.round(rng.uniform(0, size, 2) * 16).astype(int)
        rad = max(1, int(rng.uniform(0.5, 1.8) * s * 16))
        cv2.circle(
            dark if rng.random() < 0.6 else light,
            tuple(int(v) for v in p),
            rad,
            int(rng.integers(120, 230)),
            -1,
            cv2.LINE_AA,
            4,
        )
    for _ in range(rng.poisson(rate * 0.35)):  # lint fibres
        n = 6
        ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.5, n))
        step = rng.uniform(3, 8) * s
        pts = rng.uniform(0, size, 2) + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], 1) * step, 0)
        cv2.polylines(
            dark if rng.random() < 0.5 else light,
            [np.round(pts * 16).astype(np.int32)],
            False,
            int(rng.integers(90, 200)),
            1,
            cv2.LINE_AA,
            4,
        )
    a_dark = dark.astype(np.float32) * (1 / 255.0)
    a_light = light.astype(np.float32) * (1 / 255.0)
    if rng.random() < 0.35 * min(1.0, mult):  # soft smudge (fingerprint / coolant)
        c = rng.uniform(0.15, 0.85, 2) * size
        sig = rng.uniform(0.04, 0.1) * size
        x0, x1 = max(0, int(c[0] - 3 * sig)), min(size, int(c[0] + 3 * sig) + 1)
        y0, y1 = max(0, int(c[1] - 3 * sig)), min(size, int(c[1] + 3 * sig) + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        g = np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * sig * sig)).astype(np.float32)
        a_dark[y0:y1, x0:x1] += rng.uniform(0.08, 0.2) * g
    if insert_mask is not None and rng.random() < 0.35:  # reflection streak on the insert
        c = rng.uniform(0.3, 0.7, 2) * size
        canvas = np.zeros((size, size), np.uint8)
        cv2.ellipse(
            canvas,
            (int(c[0]), int(c[1])),
            (int(rng.uniform(0.15, 0.35) * size), max(1, int(rng.uniform(0.01, 0.03) * size))),
            rng.uniform(0, 180),
            0,
            360,
            255,
            -1,
            cv2.LINE_AA,
        )
        streak = cv2.GaussianBlur(canvas.astype(np.float32) * (1 / 255.0), (0, 0), 1.5 * s + 0.5)
        img += (rng.uniform(0.1, 0.25) * streak * insert_mask)[..., None]
    img *= (1.0 - np.clip(a_dark, 0, 1) * 0.85)[..., None]
    img += (np.clip(a_light, 0, 1) * 0.6)[..., None] * (1.0 - img)


@lru_cache(maxsize=8)
def _radial(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred coordinates in [-0.5, 0.5) and squared radius, cached per size."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size - 0.5
    return xx, yy, xx * xx + yy * yy


def _uniform_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance noise; uniform because it is 5x cheaper than Gaussian and
    looks the same once added to an image."""
    return (rng.random(shape, np.float32) - 0.5) * np.float32(3.4641016)


def _camera(img, rng, cfg, size, light_az):
    """Illumination ramp, vignetting, defocus, sensor noise, white balance; to uint8."""
    xx, yy, r2 = _radial(size)
    g = rng.uniform(0, cfg.illumination_gradient)
    gain = (1.0 + g * (xx * float(np.cos(light_az)) + yy * float(np.sin(light_az)))) * (
        1.0 - 2.0 * rng.uniform(*cfg.vignetting) * r2
    )
    img *= gain[..., None]
    if rng.random() < cfg.defocus_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*cfg.defocus_sigma) * size / 256.0)
    sigma = np.float32(rng.uniform(*cfg.noise_sigma))
    # Read noise plus shot noise that grows with the signal.
    img += _uniform_noise(rng, (size, size, 3)) * (sigma * (0.5 + np.sqrt(np.clip(img, 0, 1))))
    img *= (rng.uniform(0.96, 1.04, 3) * 255.0).astype(np.float32)[None, None, :]
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if cfg.jpeg_quality is not None:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _make_light(rng: np.random.Generator, cfg: SynthConfig) -> tuple[Light, float, float]:
    """The scene's light, its azimuth (the camera's illumination ramp follows it) and the
    strength of the shadows it casts."""
    az = rng.uniform(0, 2 * np.pi)
    light = Light.make(
        az,
        np.deg2rad(rng.uniform(*cfg.light_elevation)),
        rng.uniform(*cfg.light_intensity),
        rng.uniform(*cfg.ambient),
        rng.uniform(*cfg.specular),
    )
    return light, az, rng.uniform(*cfg.shadow_strength)


def _main_outline(
    rng: np.random.Generator, cfg: SynthConfig, size: int
) -> tuple[str, str, Outline]:
    """Shape, coating and posed outline of the insert under inspection, fully in view."""
    shape, coating = str(rng.choice(cfg.shapes)), str(rng.choice(cfg.coatings))
    radius = rng.uniform(*cfg.scale_range) * size / 2
    if shape == "R":
        radius *= 0.8  # a disc of the same diameter looks much bigger than a polygon
    center = size / 2 + rng.uniform(-cfg.position_jitter, cfg.position_jitter, 2) * size
    return shape, coating, _place_insert(rng, cfg, size, shape, center, radius, fit=True)


def _clutter(
    img: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    size: int,
    light: Light,
    shadow_k: float,
    outline: Outline,
    keep_out: np.ndarray | None,
) -> None:
    """A fixture rail and part of a neighbouring insert, each by chance; twice as likely a
    neighbour in an empty tray, where nothing else would fill the view."""
    has_insert = keep_out is not None
    clutter_p = cfg.clutter_prob if has_insert else min(1.0, 2 * cfg.clutter_prob)
    if rng.random() < cfg.fixture_prob:
        _fixture(img, rng, size, light, keep_out)
    if rng.random() < clutter_p:
        main_center = outline.center if has_insert else None
        _neighbour(img, rng, cfg, size, light, shadow_k, main_center, outline.radius_px)


def _scene_meta(
    label: str, shape: str, coating: str, tray: str, outline: Outline, az: float
) -> dict:
    """The manifest entry before any damage or occlusion is known (those fill it in later)."""
    has_insert = label != "empty"
    return {
        "label": label,
        "shape": shape if has_insert else "",
        "coating": coating if has_insert else "",
        "tray": tray,
        "damage": [],
        "severity": None,
        "bbox": None,
        "insert_mask": None,
        "rotation_deg": float(
            np.degrees(np.arctan2(outline.matrix[1, 0], outline.matrix[0, 0])) % 360
        ),
        "center": [float(v) for v in outline.center],
        "radius_px": outline.radius_px,
        "light_azimuth_deg": float(np.degrees(az) % 360),
        "occluded": False,
    }


def _pick_damage(
    rng: np.random.Generator,
    cfg: SynthConfig,
    k_range: tuple[float, float],
    contrast: float,
    light: Light,
) -> tuple[list[str], float, Callable[[InsertLayers, Look], None]]:
    """Damage modes (canonical order, for the manifest), severity in [0, 1], and the function
    that draws them onto an insert's layers."""
    n_modes = 2 if (rng.random() < cfg.two_damage_prob and len(cfg.damage_modes) > 1) else 1
    picked = {str(m) for m in rng.choice(cfg.damage_modes, n_modes, replace=False)}
    modes = [m for m in DAMAGE_MODES if m in picked]
    k = rng.uniform(*k_range)
    severity = round(float(np.clip(k * contrast / 2.1, 0, 1)), 3)

    def damage_fn(lay: InsertLayers, look: Look) -> None:
        # A broken corner first, so later damage is drawn on what is left of the insert.
        for m in sorted(modes, key=lambda m: m != "broken_corner"):
            DAMAGE_FUNCS[m](lay, look, light, rng, k * rng.uniform(0.9, 1.1), contrast)

    return modes, severity, damage_fn


def _occlude(
    img: np.ndarray,
    rng: np.random.Generator,
    cfg: SynthConfig,
    size: int,
    outline: Outline,
    light: Light,
    mask: np.ndarray | None,
) -> bool:
    """By chance, a gripper finger over the insert with its soft shadow; True when drawn.

    The damage ``mask`` (None for an intact insert) loses what the finger covers, in place.
    """
    if rng.random() >= cfg.occlusion_prob:
        return False
    poly, grey = _occluder(rng, size, outline, cfg.occlusion_depth)
    occ = fill_poly(size, size, poly)
    # Never hide the evidence: skip the finger if it would cover a quarter of the damage.
    if mask is not None and (occ[mask] > 0.5).sum() >= 0.25 * mask.sum():
        return False
    sh = cv2.GaussianBlur(occ, (0, 0), 2 + size / 100)
    sh = np.roll(sh, (int(-light.vec[1] * size / 40), int(-light.vec[0] * size / 40)), (0, 1))
    img *= (1.0 - 0.5 * sh * (1 - occ))[..., None]
    col = grey * (1.0 + 0.05 * lowfreq(rng, size, size, 4))
    img[:] = img * (1 - occ[..., None]) + (col * occ)[..., None]
    if mask is not None:
        mask &= occ < 0.5
    return True


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of the mask's pixels, exclusive end; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _check_args(
    label: str, difficulty: str, size: int, cfg: SynthConfig
) -> tuple[tuple[float, float], float, float]:
    """The difficulty preset ``((k_lo, k_hi), contrast, distractor multiplier)``, after
    checking every argument (so a bad one fails before any drawing)."""
    preset = check_difficulty(difficulty)
    check_size(size)
    if label not in LABELS:
        raise SynthArgumentError(f"label must be one of {list(LABELS)}, got {label!r}")
    if cfg.jpeg_quality is not None:
        check_jpeg_quality(cfg.jpeg_quality)
    return preset


def render_sample(
    index: int,
    label: str,
    seed: int = 0,
    difficulty: str = "medium",
    size: int = 256,
    config: SynthConfig | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Render one image of the data set.

    Args:
        index: Image index; with ``seed`` it fixes every random choice of the image.
        label: ``"intact"``, ``"damaged"`` or ``"empty"``.
        seed: Data-set seed.
        difficulty: ``"easy"``, ``"medium"`` or ``"hard"``: size and contrast of the damage,
            and how many distractors there are.
        size: Image side in pixels (>= 32).
        config: Nuisance knobs; defaults to ``SynthConfig()``.

    Returns:
        ``(image, mask, meta)``: the RGB image (size x size x 3, uint8), the damage mask
        (size x size bool, None unless damaged) and metadata: ``label``, ``shape``,
        ``coating``, ``tray``, ``damage`` (list of modes), ``severity`` (0-1, None unless
        damaged), ``bbox`` ((x0, y0, x1, y1) of the mask, exclusive end, or None),
        ``insert_mask`` (bool mask of the intact outline, or None for empty) and pose
        values.

    Raises:
        ValueError: On an unknown label or difficulty, or a size below 32.
    """
    cfg = config or SynthConfig()
    k_range, contrast, mult = _check_args(label, difficulty, size, cfg)
    img, tray_name = make_tray(_rng(seed, index, _TRAY), size, cfg)
    light, az, shadow_k = _make_light(_rng(seed, index, _LIGHT), cfg)
    ri = _rng(seed, index, _INSERT)
    shape, coating, outline = _main_outline(ri, cfg, size)
    has_insert = label != "empty"
    keep_out = fill_poly(size, size, outline.pts) if has_insert else None
    _clutter(img, _rng(seed, index, _CLUTTER), cfg, size, light, shadow_k, outline, keep_out)
    meta = _scene_meta(label, shape, coating, tray_name, outline, az)
    mask = None
    if has_insert:
        damage_fn = None
        if label == "damaged":
            rd = _rng(seed, index, _DAMAGE)
            modes, severity, damage_fn = _pick_damage(rd, cfg, k_range, contrast, light)
            meta["damage"], meta["severity"] = modes, severity
        lay, _ = _draw_insert(img, ri, cfg, size, outline, coating, light, shadow_k, damage_fn)
        meta["insert_mask"] = keep_out >= 0.5
        if label == "damaged":
            mask = np.zeros((size, size), bool)
            mask[lay.slc] = lay.dmg >= 0.35
        ro = _rng(seed, index, _OCCLUDE)
        meta["occluded"] = _occlude(img, ro, cfg, size, outline, light, mask)
        if mask is not None:
            meta["bbox"] = _bbox(mask)
    _distractors(img, _rng(seed, index, _DISTRACT), cfg, size, mult, keep_out)
    out = _camera(img, _rng(seed, index, _CAMERA), cfg, size, az)
    return out, mask, meta
