"""Damage modes of cutting inserts, applied to :class:`InsertLayers` before shading.

Each mode edits the geometry (``body``: material removed or added, ``height``: dents and
bumps) and the material (``albedo``, ``gloss``) and records where it did so in ``dmg``.
Sizes scale with the insert's circumscribed radius ``r`` and with the difficulty factor
``k``; ``contrast`` blends the damaged look with the intact one (1 = full contrast).
Damage sits on the cutting edges near the corners, where real inserts wear.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from inspectnet.synth.insert import SUBSTRATE, InsertLayers, Light, Look


def _paint(lay: InsertLayers, alpha: np.ndarray, target: np.ndarray | tuple) -> None:
    """Blend the albedo towards ``target`` (RGB or HxWx3) with per-pixel ``alpha``."""
    lay.albedo += (np.asarray(target, np.float32) - lay.albedo) * alpha[..., None]


def _dilate(mask: np.ndarray, px: float) -> np.ndarray:
    r = max(1, round(px))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


def _site(lay: InsertLayers, rng: np.random.Generator, spread: float = 0.3) -> int:
    """Outline index of a damage site: near a cutting corner, a little along an edge."""
    o = lay.outline
    n = len(o.pts)
    if len(o.corners) == 0:
        return int(rng.integers(n))
    cand = o.corners[o.acute] if o.acute.any() and rng.random() < 0.8 else o.corners
    c = int(rng.choice(cand))
    off = rng.uniform(-spread, spread) * o.radius_px / o.step
    return int(c + off) % n


def _frame(lay: InsertLayers, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point, outward normal and tangent of outline point ``i``."""
    p, nv = lay.outline.pts[i], lay.outline.normals[i]
    return p, nv, np.array([-nv[1], nv[0]])


def _fracture(
    lay: InsertLayers, removed: np.ndarray, rim_px: float, rng: np.random.Generator, contrast: float
) -> None:
    """Remove material and show the matte, rough fracture facet along the new edge."""
    lay.body *= 1.0 - removed
    rim = np.clip(_dilate(removed, rim_px) - removed, 0.0, 1.0) * lay.body
    rough = 0.55 + 0.35 * rng.random(rim.shape, np.float32)
    _paint(lay, rim * contrast, SUBSTRATE[None, None, :] * rough[..., None])
    lay.gloss = lay.gloss * (1.0 - rim)
    # The facet slopes down towards the break: shading makes it read as an edge, not a stain.
    lay.height -= rim * rim_px * 0.8
    lay.dmg = np.maximum(lay.dmg, np.maximum(removed, rim))


def chipping(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """One to three irregular notches broken out of a cutting edge."""
    o, r = lay.outline, lay.outline.radius_px
    i0 = _site(lay, rng)
    removed = np.zeros((lay.h, lay.w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        i = (i0 + int(rng.uniform(-0.12, 0.12) * r / o.step)) % len(o.pts)
        p, nv, tv = _frame(lay, i)
        w = max(2.5, rng.uniform(0.08, 0.14) * r * k)
        dep = max(1.5, w * rng.uniform(0.4, 0.75))
        s = np.linspace(-0.5, 0.5, 7)
        prof = np.sin(np.pi * (s + 0.5)) ** 0.7 * rng.uniform(0.5, 1.0, 7)
        prof[[0, -1]] = 0.0
        along = s * w + rng.uniform(-0.07, 0.07, 7) * w
        inner = p + along[:, None] * tv - (prof * dep)[:, None] * nv
        outer = np.array([p + 0.5 * w * tv + 3 * nv, p - 0.5 * w * tv + 3 * nv])
        removed = np.maximum(removed, lay.poly(np.vstack([inner, outer])))
    _fracture(lay, removed * lay.m0, max(1.2, 0.02 * r * k), rng, contrast)


def broken_corner(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """A corner broken off along a jagged fracture line; the tray shows where it was."""
    o, r = lay.outline, lay.outline.radius_px
    if len(o.corners):
        cand = o.corners[o.acute] if o.acute.any() else o.corners
        i = int(rng.choice(cand))
    else:
        i = int(rng.integers(len(o.pts)))
    p, nv, _ = _frame(lay, i)
    depth = rng.uniform(0.13, 0.22) * r * k
    a = rng.uniform(-0.4, 0.4)
    tv = np.array([-nv[1], nv[0]]) * np.cos(a) + nv * np.sin(a)
    q = p - nv * depth
    s = np.linspace(-0.7 * r, 0.7 * r, 14)
    jit = np.cumsum(rng.normal(0.0, 0.06 * depth + 0.4, 14))
    line = q + s[:, None] * tv + (jit - jit.mean())[:, None] * nv
    far = np.array([q + 0.7 * r * tv + nv * (depth + r), q - 0.7 * r * tv + nv * (depth + r)])
    removed = lay.poly(np.vstack([line, far])) * lay.m0
    _fracture(lay, removed, max(1.5, 0.035 * r * k), rng, contrast)


def flank_wear(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """A worn band along a cutting edge: bare, shiny substrate with a dark inner border."""
    o, r = lay.outline, lay.outline.radius_px
    i0 = _site(lay, rng, spread=0.2)
    n_idx = max(4, int(rng.uniform(0.3, 0.6) * r * k / o.step))
    idx = (i0 + np.arange(n_idx) - n_idx // 2) % len(o.pts)
    t = np.linspace(0, 1, n_idx)
    wmax = max(1.8, rng.uniform(0.035, 0.06) * r * k)
    bumps = np.interp(t, np.linspace(0, 1, 6), rng.uniform(0.7, 1.3, 6))
    w = wmax * np.sin(np.pi * t) ** 0.35 * bumps
    pts, nrm = o.pts[idx], o.normals[idx]
    band = lay.poly(np.vstack([pts + 1.5 * nrm, (pts - w[:, None] * nrm)[::-1]])) * lay.body
    # Abraded metal: speckle is enough at this size (streaks would not resolve).
    streak = 0.9 + 0.3 * rng.random(band.shape, np.float32)
    worn = SUBSTRATE * (1.2 if look.color.mean() > 0.4 else 1.0)
    _paint(lay, band * contrast, worn[None, None, :] * streak[..., None])
    border = np.clip(_dilate(band, 1) - band, 0, 1) * lay.body * (lay.dist > 1.0)
    lay.albedo *= (1.0 - 0.45 * contrast * border)[..., None]
    lay.gloss = np.maximum(lay.gloss, band * 1.0)
    lay.height *= 1.0 - band  # the honed edge is worn flat: its rim highlight disappears there
    lay.dmg = np.maximum(lay.dmg, np.maximum(band, border))


def crater_wear(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """A dark, dished crater on the rake face just behind the cutting edge."""
    o, r = lay.outline, lay.outline.radius_px
    i = _site(lay, rng, spread=0.25)
    p, nv, tv = _frame(lay, i)
    a = max(3.0, rng.uniform(0.09, 0.15) * r * k)
    b = a * rng.uniform(0.35, 0.55)
    land = look.land * o.inradius_unit * r
    c = p - nv * (land * 0.6 + b + 1.0)
    th = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    rho = rng.uniform(0.8, 1.15, 16)
    poly = c + (a * rho * np.cos(th))[:, None] * tv + (b * rho * np.sin(th))[:, None] * nv
    blob = lay.poly(poly) * lay.body * (1.0 - lay.hole)
    soft = cv2.GaussianBlur(blob, (0, 0), max(0.8, 0.35 * b))
    lay.height -= soft * b * 0.7
    dark = look.color.mean() < 0.25
    target = np.array([0.45, 0.36, 0.28] if dark else [0.22, 0.16, 0.12], np.float32)
    mott = 0.8 + 0.4 * rng.random(blob.shape, np.float32)
    _paint(lay, blob * contrast, target[None, None, :] * mott[..., None])
    lay.gloss = lay.gloss * (1.0 - 0.7 * blob)
    lay.dmg = np.maximum(lay.dmg, blob)


def crack(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """A thin dark crack running from the cutting edge into the insert, maybe branched."""
    r = lay.outline.radius_px
    i = _site(lay, rng)
    p, nv, _ = _frame(lay, i)
    length = rng.uniform(0.22, 0.4) * r * k
    n = max(4, int(length / 3))
    ang0 = np.arctan2(-nv[1], -nv[0]) + rng.uniform(-0.6, 0.6)
    ang = ang0 + np.cumsum(rng.normal(0, 0.3, n))
    steps = np.stack([np.cos(ang), np.sin(ang)], 1) * (length / n)
    path = np.vstack([p + nv * 1.5, p + np.cumsum(steps, 0)])
    lines = [path]
    if rng.random() < 0.4:
        m = n // 2
        bang = (
            ang[m]
            + rng.choice([-1, 1]) * rng.uniform(0.4, 0.9)
            + np.cumsum(rng.normal(0, 0.3, n // 2))
        )
        bst = np.stack([np.cos(bang), np.sin(bang)], 1) * (length / n)
        lines.append(np.vstack([path[m], path[m] + np.cumsum(bst, 0)]))
    thick = 1 if k < 0.9 else 2
    off = np.array(light.vec[:2]) / (np.linalg.norm(light.vec[:2]) + 1e-9)

    def draw(shift: np.ndarray) -> np.ndarray:
        canvas = np.zeros((lay.h, lay.w), np.uint8)
        pl = [np.round((ln - (lay.ox, lay.oy) + shift) * 16).astype(np.int32) for ln in lines]
        cv2.polylines(canvas, pl, False, 255, thick, cv2.LINE_AA, 4)
        return canvas.astype(np.float32) * (1.0 / 255.0)

    line = draw(np.zeros(2)) * lay.body
    lit = draw(off * 1.2) * lay.body * (1.0 - line)  # the lit lip of the crack
    lay.albedo *= (1.0 - 0.9 * contrast * line)[..., None]
    lay.albedo += (0.35 * contrast * lit)[..., None]
    lay.gloss = lay.gloss * (1.0 - line)
    lay.dmg = np.maximum(lay.dmg, _dilate(np.maximum(line, lit), 1) * lay.body)


def built_up_edge(
    lay: InsertLayers, look: Look, light: Light, rng: np.random.Generator, k: float, contrast: float
) -> None:
    """A rough lump of workpiece metal welded onto the cutting edge."""
    r = lay.outline.radius_px
    i = _site(lay, rng, spread=0.2)
    p, nv, tv = _frame(lay, i)
    rad = max(2.5, rng.uniform(0.06, 0.1) * r * k)
    c = p + nv * rad * rng.uniform(-0.6, -0.1)
    th = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    rho = rng.uniform(0.65, 1.2, 14)
    poly = c + (1.3 * rad * rho * np.cos(th))[:, None] * tv + (rad * rho * np.sin(th))[:, None] * nv
    blob = lay.poly(poly)
    lay.body = np.maximum(lay.body, blob)
    bump = cv2.GaussianBlur(blob, (0, 0), max(0.8, 0.35 * rad))
    lay.height = lay.height * (1.0 - blob) + bump * rad * 0.8
    rough = 0.65 + 0.6 * rng.random(blob.shape, np.float32)
    steel = np.array([0.66, 0.64, 0.60], np.float32)
    # Outside the intact outline there is nothing else to see: full opacity there.
    alpha = blob * np.where(lay.m0 > 0.5, contrast, 1.0)
    _paint(lay, alpha, steel[None, None, :] * rough[..., None])
    lay.gloss = lay.gloss * (1.0 - blob) + 0.5 * blob
    lay.dmg = np.maximum(lay.dmg, blob)


#: Mode name -> function.
DAMAGE_FUNCS: dict[str, Callable[..., None]] = {
    "chipping": chipping,
    "broken_corner": broken_corner,
    "flank_wear": flank_wear,
    "crater_wear": crater_wear,
    "crack": crack,
    "built_up_edge": built_up_edge,
}
