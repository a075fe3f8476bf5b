"""ISO 1832 insert outlines and their placement in the image.

An outline is built in *unit* coordinates (circumscribed radius 1, centre at the origin),
its corners are rounded with the nose radius, it is resampled to evenly spaced points (so
damage can be placed anywhere along an edge) and then mapped into the image by a 2x2 matrix
(rotation, camera-tilt foreshortening, shear) plus a translation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Acute corner angle of each shape in degrees (None: round insert).
CORNER_ANGLE: dict[str, float | None] = {
    "C": 80.0,
    "D": 55.0,
    "S": 90.0,
    "T": 60.0,
    "V": 35.0,
    "W": 80.0,
    "R": None,
}


def base_vertices(shape: str) -> np.ndarray | None:
    """Sharp-cornered polygon of ``shape`` (K x 2, counter-clockwise, circumscribed radius 1).

    Args:
        shape: ISO 1832 letter, one of C, D, S, T, V, W, R.

    Returns:
        The vertices, or None for the round insert R.
    """
    if shape == "R":
        return None
    if shape == "S":
        ang = np.deg2rad([45, 135, 225, 315])
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    if shape == "T":
        ang = np.deg2rad([90, 210, 330])
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    if shape in ("C", "D", "V"):
        # Rhombus: acute corners on the x axis; tan(alpha/2) = short / long half-diagonal.
        b = np.tan(np.deg2rad(CORNER_ANGLE[shape]) / 2)
        return np.array([[1.0, 0.0], [0.0, b], [-1.0, 0.0], [0.0, -b]])
    if shape == "W":
        # Trigon: three 80 deg corners at radius 1, three obtuse ones in between at radius rb
        # chosen so that the main corner angle is 80 deg (rb = 0.5 would give a triangle).
        t = np.tan(np.deg2rad(40.0))
        rb = t / (np.cos(np.deg2rad(30)) + t / 2)
        ang = np.deg2rad([30, 90, 150, 210, 270, 330])
        rad = np.array([rb, 1, rb, 1, rb, 1])
        return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    raise ValueError(f"unknown shape {shape!r}")


def inradius(shape: str) -> float:
    """Inscribed-circle radius of the sharp polygon in unit coordinates (1 for R)."""
    v = base_vertices(shape)
    if v is None:
        return 1.0
    nxt = np.roll(v, -1, 0)
    edge = nxt - v
    # Distance from origin to each edge line: |cross(v, edge)| / |edge|.
    d = np.abs(v[:, 0] * edge[:, 1] - v[:, 1] * edge[:, 0]) / np.linalg.norm(edge, axis=1)
    return float(d.min())


def _rounded(verts: np.ndarray, radius: float, arc_pts: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Replace each vertex of a convex CCW polygon by a circular arc of ``radius``.

    Returns the polyline (M x 2) and the apex point of each arc (K x 2).
    """
    out, apexes = [], []
    k = len(verts)
    for i in range(k):
        v, vp, vn = verts[i], verts[i - 1], verts[(i + 1) % k]
        e1 = (vp - v) / np.linalg.norm(vp - v)
        e2 = (vn - v) / np.linalg.norm(vn - v)
        theta = np.arccos(np.clip(e1 @ e2, -1, 1))
        bis = (e1 + e2) / np.linalg.norm(e1 + e2)
        c = v + bis * radius / np.sin(theta / 2)
        a = v + e1 * radius / np.tan(theta / 2)
        b = v + e2 * radius / np.tan(theta / 2)
        a0 = np.arctan2(*(a - c)[::-1])
        a1 = np.arctan2(*(b - c)[::-1])
        # CCW polygon: the arc turns left, so the angle increases from a to b.
        if a1 < a0:
            a1 += 2 * np.pi
        t = np.linspace(a0, a1, arc_pts)
        out.append(c + radius * np.stack([np.cos(t), np.sin(t)], 1))
        apexes.append(c - bis * radius)
    return np.concatenate(out), np.array(apexes)


def _resample(poly: np.ndarray, n: int) -> np.ndarray:
    """Resample a closed polyline to ``n`` points evenly spaced by arc length."""
    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0, cum[-1], n, endpoint=False)
    return np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], 1)


@dataclass
class Outline:
    """An insert outline placed in the image.

    Attributes:
        pts: (N, 2) outline points in image pixels (x, y), evenly spaced, closed.
        normals: (N, 2) outward unit normals at ``pts``.
        corners: Indices into ``pts`` of the corner apexes (empty for R).
        acute: For each corner, whether it is a cutting (acute) corner.
        center: (x, y) centre in pixels.
        matrix: 2x2 map from unit coordinates to pixels (without the translation).
        radius_px: Circumscribed radius in pixels (before tilt).
        inradius_unit: Inscribed radius in unit coordinates.
    """

    pts: np.ndarray
    normals: np.ndarray
    corners: np.ndarray
    acute: np.ndarray
    center: np.ndarray
    matrix: np.ndarray
    radius_px: float
    inradius_unit: float

    @property
    def step(self) -> float:
        """Mean spacing of the outline points in pixels."""
        return float(np.linalg.norm(self.pts[1] - self.pts[0]))

    def to_unit(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map pixel coordinates to the insert's unit coordinates (for holes and shading)."""
        # Python floats keep float32 inputs float32 (numpy float64 scalars would promote).
        (a, b), (c, d) = np.linalg.inv(self.matrix).tolist()
        dx, dy = x - float(self.center[0]), y - float(self.center[1])
        return a * dx + b * dy, c * dx + d * dy


def pose_matrix(
    radius_px: float, rotation: float, tilt: float, tilt_dir: float, shear: float
) -> np.ndarray:
    """Unit-to-pixel matrix: in-plane rotation, then camera foreshortening and shear."""

    def rot(a: float) -> np.ndarray:
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    fore = rot(tilt_dir) @ np.diag([1.0, 1.0 - tilt]) @ rot(-tilt_dir)
    sh = np.array([[1.0, shear], [0.0, 1.0]])
    return radius_px * fore @ sh @ rot(rotation)


def make_outline(
    shape: str, corner_radius: float, matrix: np.ndarray, center: np.ndarray
) -> Outline:
    """Build the placed outline of an insert.

    Args:
        shape: ISO 1832 letter.
        corner_radius: Nose radius in unit coordinates (relative to the circumscribed radius).
        matrix: Unit-to-pixel 2x2 matrix from :func:`pose_matrix`.
        center: (x, y) of the insert centre in pixels.

    Returns:
        The :class:`Outline`, with points about 1.5 px apart.
    """
    verts = base_vertices(shape)
    radius_px = float(np.sqrt(abs(np.linalg.det(matrix))))
    if verts is None:
        t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
        poly = np.stack([np.cos(t), np.sin(t)], 1)
        apex = np.zeros((0, 2))
        acute_flags = np.zeros(0, bool)
    else:
        poly, apex = _rounded(verts, corner_radius)
        # Cutting corners: the acute ones (rhombic: the two on the long diagonal; W: the 80 deg).
        r = np.linalg.norm(verts, axis=1)
        acute_flags = r > r.max() - 1e-6
    perim_px = (
        np.sum(np.linalg.norm(np.diff(np.vstack([poly, poly[:1]]), axis=0), axis=1)) * radius_px
    )
    n = int(max(64, perim_px / 1.5))
    unit = _resample(poly, n)
    pts = unit @ matrix.T + center
    # Normals from central differences; flip to point away from the centre.
    tang = np.roll(pts, -1, 0) - np.roll(pts, 1, 0)
    nrm = np.stack([tang[:, 1], -tang[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    if np.mean(np.sum(nrm * (pts - center), 1)) < 0:
        nrm = -nrm
    if len(apex):
        apex_px = apex @ matrix.T + center
        corners = np.array([int(np.argmin(np.sum((pts - a) ** 2, 1))) for a in apex_px])
    else:
        corners = np.zeros(0, int)
    return Outline(
        pts,
        nrm,
        corners,
        acute_flags,
        np.asarray(center, float),
        matrix,
        radius_px,
        inradius(shape),
    )
