"""Drawing one insert: geometry layers (mask, height field, albedo, gloss) and shading.

The insert is drawn in a crop around its outline to keep the per-image cost low.  Shape
detail (honed edge, land, chip-breaker groove, countersunk hole, craters, built-up edges) is
expressed as a *height field*; its gradient gives normals, so one directional light shades
every detail consistently (bright on the side facing the light, dark on the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspectnet.synth.shapes import Outline

#: Coating -> (albedo RGB, gloss, tint of specular light).
COATING_LOOK: dict[str, tuple[tuple[float, float, float], float, tuple[float, float, float]]] = {
    "tin_gold": ((0.80, 0.62, 0.25), 0.9, (1.0, 0.88, 0.55)),
    "tialn_violet": ((0.33, 0.30, 0.37), 0.7, (0.95, 0.9, 1.0)),
    "ticn_blue": ((0.36, 0.42, 0.52), 0.7, (0.9, 0.95, 1.0)),
    "cvd_black": ((0.09, 0.09, 0.10), 1.0, (1.0, 1.0, 1.0)),
    "carbide_grey": ((0.55, 0.55, 0.56), 0.6, (1.0, 1.0, 1.0)),
}
#: Colour of bare tungsten-carbide substrate (shows where the coating is worn or broken).
SUBSTRATE = np.array([0.62, 0.62, 0.64], np.float32)


def fill_poly(h: int, w: int, pts: np.ndarray) -> np.ndarray:
    """Anti-aliased filled polygon as a float32 mask in [0, 1] (sub-pixel accurate)."""
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def lowfreq(rng: np.random.Generator, h: int, w: int, grid: int) -> np.ndarray:
    """Smooth noise in about [-1, 1] with ``grid`` blobs across: cheap mottling."""
    g = rng.standard_normal((grid, grid)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass
class Light:
    """A directional light plus camera-independent gains.

    Attributes:
        vec: Unit vector towards the light (x right, y down, z towards the camera).
        half: Blinn half vector between the light and the camera (looking down).
        intensity: Gain of the diffuse term.
        ambient: Share of light that reaches every surface.
        specular: Gain of highlights.
    """

    vec: np.ndarray
    half: np.ndarray
    intensity: float
    ambient: float
    specular: float

    @classmethod
    def make(
        cls, azimuth: float, elevation: float, intensity: float, ambient: float, specular: float
    ) -> Light:
        """Build from angles in radians."""
        v = np.array(
            [
                np.cos(azimuth) * np.cos(elevation),
                np.sin(azimuth) * np.cos(elevation),
                np.sin(elevation),
            ]
        )
        hv = v + np.array([0.0, 0.0, 1.0])
        return cls(v, hv / np.linalg.norm(hv), intensity, ambient, specular)


@dataclass
class Look:
    """Appearance parameters of one insert (drawn once per image)."""

    coating: str
    color: np.ndarray
    gloss: float
    tint: np.ndarray
    land: float  # land width, fraction of the inscribed radius
    groove: float  # chip-breaker groove width, same unit (0 = none)
    hole: float  # hole radius, fraction of the inscribed radius (0 = none)
    sheen: float  # strength of the soft reflection on the rake face


def random_look(
    rng: np.random.Generator, coating: str, hole_prob: float, chipbreaker_prob: float
) -> Look:
    """Draw the finish of an insert with a given coating."""
    rgb, gloss, tint = COATING_LOOK[coating]
    color = (
        np.array(rgb, np.float32)
        * rng.uniform(0.95, 1.05, 3).astype(np.float32)
        * rng.uniform(0.85, 1.1)
    )
    return Look(
        coating=coating,
        color=color,
        gloss=gloss * rng.uniform(0.7, 1.1),
        tint=np.array(tint, np.float32),
        land=rng.uniform(0.07, 0.13),
        groove=rng.uniform(0.12, 0.22) if rng.random() < chipbreaker_prob else 0.0,
        hole=rng.uniform(0.36, 0.46) if rng.random() < hole_prob else 0.0,
        sheen=rng.uniform(0.05, 0.3),
    )


class InsertLayers:
    """Per-pixel layers of an insert in a crop of the image.

    Attributes:
        ox, oy: Image coordinates of the crop's top-left pixel.
        m0: Anti-aliased mask of the intact outline.
        body: Mask of the material that is really there (damage removes or adds to it).
        dist: Distance in pixels from the intact edge, inside the outline.
        height: Height field in pixels (0 = rake face, negative = lower).
        albedo: (h, w, 3) surface colour.
        gloss: Specular strength per pixel.
        hole: Mask of the through-hole (tray seen through it).
        dmg: Damage mask (float, accumulated by the damage modes).
        flat: Mask of the flat rake face (land and plateau), where craters and sheen live.
    """

    def __init__(self, outline: Outline, size: int, pad: int):
        x0, y0 = np.floor(outline.pts.min(0)).astype(int) - pad
        x1, y1 = np.ceil(outline.pts.max(0)).astype(int) + pad + 1
        self.ox, self.oy = max(0, int(x0)), max(0, int(y0))
        self.w, self.h = min(size, int(x1)) - self.ox, min(size, int(y1)) - self.oy
        self.outline = outline

    @property
    def slc(self) -> tuple[slice, slice]:
        """Slices of the crop in the full image."""
        return slice(self.oy, self.oy + self.h), slice(self.ox, self.ox + self.w)

    def poly(self, pts: np.ndarray) -> np.ndarray:
        """Rasterise an image-coordinate polygon into the crop."""
        return fill_poly(self.h, self.w, pts - (self.ox, self.oy))

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates (x, y) of every crop pixel."""
        xs = np.arange(self.ox, self.ox + self.w, dtype=np.float32)
        ys = np.arange(self.oy, self.oy + self.h, dtype=np.float32)
        return np.meshgrid(xs, ys)


def build_insert(outline: Outline, look: Look, size: int, rng: np.random.Generator) -> InsertLayers:
    """Rasterise an intact insert into geometry and material layers."""
    r_px = outline.radius_px
    lay = InsertLayers(outline, size, pad=int(0.16 * r_px + 6))
    if lay.w <= 2 or lay.h <= 2:
        return lay
    lay.m0 = lay.poly(outline.pts)
    lay.body = lay.m0.copy()
    lay.dist = cv2.distanceTransform((lay.m0 >= 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    d = lay.dist
    rin = outline.inradius_unit * r_px  # inscribed radius in pixels
    # Honed cutting edge: a rounded drop over ~1.5 px gives the bright/dark rim under the light.
    bevel = max(1.2, 0.018 * r_px)
    h = -0.9 * bevel * np.square(np.clip(1.0 - d / bevel, 0.0, 1.0))
    land = look.land * rin
    lay.flat = (d < land).astype(np.float32)
    if look.groove > 0:
        # Chip-breaker groove following the outline: asymmetric profile (steep back wall).
        gw = look.groove * rin
        t = np.clip((d - land) / gw, 0.0, 1.0)
        prof = np.where(
            t < 0.65, np.sin(t / 0.65 * np.pi / 2), np.cos((t - 0.65) / 0.35 * np.pi / 2)
        )
        h = h - 0.45 * gw * prof * (t > 0) * (t < 1)
        lay.flat = np.maximum(lay.flat, (d > land + gw).astype(np.float32))
        lay.groove = ((t > 0) & (t < 1)).astype(np.float32)
    else:
        lay.flat = np.ones_like(d)
        lay.groove = np.zeros_like(d)
    xs, ys = lay.grid()
    lay.xs, lay.ys = xs, ys
    if look.hole > 0:
        u, v = outline.to_unit(xs, ys)
        r = np.sqrt(u * u + v * v) * r_px  # radial distance in (untilted) pixels
        rh = look.hole * rin
        cs = 0.14 * rin  # countersink width
        ring = np.clip(1.0 - (r - rh) / cs, 0.0, 1.0) * (r >= rh)
        h = h - 0.5 * cs * ring
        lay.hole = np.clip(rh - r + 0.5, 0.0, 1.0)
        lay.flat *= (ring == 0).astype(np.float32)
    else:
        lay.hole = np.zeros_like(d)
    lay.height = h.astype(np.float32)
    # Ground carbide: slight mottling and grain; the land is honed a little brighter.
    tex = (
        1.0
        + 0.05 * lowfreq(rng, lay.h, lay.w, 6)
        + 0.025 * (rng.random((lay.h, lay.w), np.float32) - 0.5) * 3.46
    )
    tex *= 1.0 + 0.06 * (d < land)
    lay.albedo = look.color[None, None, :] * tex[..., None]
    lay.gloss = (look.gloss * (1.0 - 0.5 * lay.groove)).astype(np.float32)
    lay.dmg = np.zeros((lay.h, lay.w), np.float32)
    return lay


def shade_insert(
    lay: InsertLayers, look: Look, light: Light, tray_crop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shade the layers under ``light``.

    Args:
        lay: Layers from :func:`build_insert` (possibly modified by damage).
        look: The insert's finish.
        light: The scene light.
        tray_crop: The tray under the crop (seen through the hole and broken-away parts).

    Returns:
        (rgb, alpha) of the crop; composite as ``tray * (1 - alpha) + rgb * alpha``.
    """
    h = lay.height
    hx = cv2.Sobel(h, cv2.CV_32F, 1, 0, ksize=3) * 0.125
    hy = cv2.Sobel(h, cv2.CV_32F, 0, 1, ksize=3) * 0.125
    inv = 1.0 / np.sqrt(1.0 + hx * hx + hy * hy)
    # Python floats, not numpy float64 scalars: those would promote the float32 maps to float64.
    lx, ly, lz = (float(v) for v in light.vec)
    ndl = np.clip((lz - hx * lx - hy * ly) * inv, 0.0, None)
    hx_, hy_, hz_ = (float(v) for v in light.half)
    ndh = np.clip((hz_ - hx * hx_ - hy * hy_) * inv, 0.0, 1.0)
    diff = light.ambient + (1.0 - light.ambient) * light.intensity * ndl / lz
    n8 = np.square(np.square(np.square(ndh)))
    spec = light.specular * lay.gloss * n8 * np.square(np.square(n8))  # ndh ** 40, cheaply
    # Soft reflection of the lamp on the flat rake face, offset towards the light.
    cx, cy = (
        float(v) for v in lay.outline.center + np.array([lx, ly]) * 0.35 * lay.outline.radius_px
    )
    s2 = 2 * (0.45 * lay.outline.radius_px) ** 2
    blob = np.exp(-(np.square(lay.xs - cx) + np.square(lay.ys - cy)) * (1.0 / s2))
    spec = spec + light.specular * look.sheen * lay.gloss * blob * np.square(
        np.square(np.square(inv))
    )
    rgb = lay.albedo * diff[..., None] + spec[..., None] * look.tint[None, None, :]
    hole = lay.hole[..., None]
    rgb = rgb * (1.0 - hole) + tray_crop * 0.22 * hole
    return rgb, lay.body


def cast_shadow(lay: InsertLayers, light: Light, strength: float) -> np.ndarray:
    """Soft shadow of the insert body on the tray (crop-sized, 0 = none, 1 = black)."""
    thick = 0.06 * lay.outline.radius_px
    off = -np.array(light.vec[:2]) / max(light.vec[2], 0.3) * thick
    mat = np.float32([[1, 0, off[0]], [0, 1, off[1]]])
    sh = cv2.warpAffine(lay.body, mat, (lay.w, lay.h), flags=cv2.INTER_LINEAR)
    sig = 0.5 + 0.04 * lay.outline.radius_px
    return cv2.GaussianBlur(sh, (0, 0), sig) * strength
