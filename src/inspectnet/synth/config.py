"""Knobs of the synthetic insert generator and argument checking.

Every knob maps to one of the classic reasons why vision is hard (viewpoint, scale,
deformation, occlusion, illumination, background clutter, intra-class variation) or to the
camera (noise, defocus, JPEG).  Defaults are tuned so that a ``medium`` data set looks like a
real inspection tray and still lets a small CNN learn damage from ~1000 images.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspectnet.errors import ConfigError

#: ISO 1832 shape letters the generator can draw.
SHAPES: tuple[str, ...] = ("C", "D", "S", "T", "V", "W", "R")
#: Coating names (as written to the manifest).
COATINGS: tuple[str, ...] = ("tin_gold", "tialn_violet", "ticn_blue", "cvd_black", "carbide_grey")
#: Damage modes (as written to the manifest, joined by ``+`` when there are two).
DAMAGE_MODES: tuple[str, ...] = (
    "chipping",
    "broken_corner",
    "flank_wear",
    "crater_wear",
    "crack",
    "built_up_edge",
)
#: Tray surfaces the insert can lie on.
TRAYS: tuple[str, ...] = (
    "anodised_black",
    "anodised_grey",
    "plastic_light",
    "plastic_blue",
    "mat_green",
)
#: Class names, in the order used for folders.
LABELS: tuple[str, ...] = ("intact", "damaged", "empty")

#: difficulty -> (damage size range as a multiplier, damage contrast, distractor multiplier).
#: ``medium`` damage is plain to see at 256 px (what the demo and the course's lesson need);
#: ``hard`` keeps it small and low-contrast: subtle, but a careful person still sees it.
DIFFICULTIES: dict[str, tuple[tuple[float, float], float, float]] = {
    "easy": ((3.8, 4.6), 1.0, 0.6),
    "medium": ((3.0, 3.8), 1.0, 0.8),
    "hard": ((1.2, 1.6), 0.8, 1.2),
}


class SynthArgumentError(ConfigError, ValueError):
    """A generator argument is out of range (a ``ValueError`` and an inspectnet ``ConfigError``)."""


@dataclass(frozen=True)
class SynthConfig:
    """Nuisance knobs of the generator; ``difficulty`` separately scales the damage itself.

    Ranges are ``(low, high)`` tuples sampled uniformly per image; probabilities are per image.
    Lengths are relative to the image size unless noted, so every ``size`` looks alike.

    Attributes:
        rotation_range: Viewpoint. In-plane rotation range of the insert in degrees
            (360 = any orientation, 0 = always upright).
        tilt_max: Viewpoint. Largest foreshortening from a tilted camera (0.12 = an axis
            shrinks by up to 12 %).
        scale_range: Scale. Insert's circumscribed diameter as a fraction of the image side.
        position_jitter: Scale/position. Largest offset of the insert centre from the image
            centre, as a fraction of the image side (0.15 = +-15 %).
        shear_max: Deformation. Largest shear of the apparent outline (lens and perspective
            distortion of a rigid part).
        occlusion_prob: Occlusion. Probability that a gripper finger covers part of the insert
            (never most of the damage).
        occlusion_depth: Occlusion. Largest reach of that finger into the insert, as a fraction
            of the insert radius.
        light_elevation: Illumination. Elevation of the directional light in degrees (low =
            grazing light, strong shading).
        light_intensity: Illumination. Gain of the directional light.
        ambient: Illumination. Share of ambient (shadow-less) light.
        specular: Illumination. Gain of specular highlights and the sheen on the rake face.
        illumination_gradient: Illumination. Largest linear brightness ramp across the image.
        vignetting: Illumination. Range of corner darkening of the lens.
        shadow_strength: Illumination. How dark the insert's cast shadow is.
        trays: Background clutter. Tray surfaces to choose from (see ``TRAYS``).
        tray_scratches: Background clutter. Mean number of scratches on the tray.
        clutter_prob: Background clutter. Probability of part of a neighbouring insert at the
            image border.
        fixture_prob: Background clutter. Probability of a fixture rail along one border.
        shapes: Intra-class variation. ISO shape letters to draw from (see ``SHAPES``).
        coatings: Intra-class variation. Coatings to draw from (see ``COATINGS``).
        corner_radius: Intra-class variation. Corner radius relative to the circumscribed
            radius.
        hole_prob: Intra-class variation. Probability of a central clamping hole.
        chipbreaker_prob: Intra-class variation. Probability of a chip-breaker groove.
        distractor_rate: Intra-class variation. Mean number of harmless marks (dust, lint,
            reflections, smudges) per image, in both classes, so a dark blob decides nothing.
        damage_modes: Damage modes to draw from (see ``DAMAGE_MODES``).
        two_damage_prob: Probability that a damaged insert carries two damage modes.
        empty_fraction: Share of ``empty`` images when ``with_empty`` is asked.
        noise_sigma: Camera. Range of the sensor noise standard deviation (0-1 scale).
        defocus_prob: Camera. Probability of slight defocus.
        defocus_sigma: Camera. Gaussian blur sigma of the defocus in pixels at 256 px.
        jpeg_quality: Camera. When set, every image goes through JPEG at this quality
            (saved as PNG all the same) to add block artefacts.
    """

    rotation_range: float = 360.0
    tilt_max: float = 0.12
    scale_range: tuple[float, float] = (0.55, 0.82)
    position_jitter: float = 0.15
    shear_max: float = 0.05
    occlusion_prob: float = 0.1
    occlusion_depth: float = 0.35
    light_elevation: tuple[float, float] = (30.0, 70.0)
    light_intensity: tuple[float, float] = (0.8, 1.2)
    ambient: tuple[float, float] = (0.3, 0.5)
    specular: tuple[float, float] = (0.4, 1.0)
    illumination_gradient: float = 0.25
    vignetting: tuple[float, float] = (0.0, 0.35)
    shadow_strength: tuple[float, float] = (0.3, 0.6)
    trays: tuple[str, ...] = TRAYS
    tray_scratches: float = 3.0
    clutter_prob: float = 0.3
    fixture_prob: float = 0.2
    shapes: tuple[str, ...] = SHAPES
    coatings: tuple[str, ...] = COATINGS
    corner_radius: tuple[float, float] = (0.03, 0.1)
    hole_prob: float = 0.85
    chipbreaker_prob: float = 0.8
    distractor_rate: float = 5.0
    damage_modes: tuple[str, ...] = DAMAGE_MODES
    two_damage_prob: float = 0.3
    empty_fraction: float = 0.2
    noise_sigma: tuple[float, float] = (0.004, 0.02)
    defocus_prob: float = 0.4
    defocus_sigma: tuple[float, float] = (0.3, 0.9)
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        for name, allowed, values in (
            ("shapes", SHAPES, self.shapes),
            ("coatings", COATINGS, self.coatings),
            ("damage_modes", DAMAGE_MODES, self.damage_modes),
            ("trays", TRAYS, self.trays),
        ):
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise SynthArgumentError(
                    f"SynthConfig.{name} got {list(values)!r}; "
                    f"allowed: a non-empty subset of {list(allowed)}"
                )
        if self.jpeg_quality is not None:
            check_jpeg_quality(self.jpeg_quality)


def check_difficulty(difficulty: str) -> tuple[tuple[float, float], float, float]:
    """Return the difficulty preset or raise a clear error."""
    if difficulty not in DIFFICULTIES:
        raise SynthArgumentError(
            f"difficulty must be one of {list(DIFFICULTIES)}, got {difficulty!r}"
        )
    return DIFFICULTIES[difficulty]


def check_size(size: int) -> None:
    """Images smaller than 32 px cannot show damage."""
    if not isinstance(size, (int,)) or isinstance(size, bool) or size < 32:
        raise SynthArgumentError(f"size must be an integer >= 32 (pixels), got {size!r}")


def check_jpeg_quality(q: int) -> None:
    """JPEG quality as Pillow/OpenCV understand it."""
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
        raise SynthArgumentError(f"jpeg_quality must be an integer in 1..100 or None, got {q!r}")


def check_generate_args(n: int, damaged_fraction: float, workers: int) -> None:
    """Check the arguments of :func:`inspectnet.synth.generate` that the renderer does not."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise SynthArgumentError(f"n must be an integer >= 2 (images in total), got {n!r}")
    if not isinstance(damaged_fraction, (int, float)) or not 0.0 < float(damaged_fraction) < 1.0:
        raise SynthArgumentError(
            f"damaged_fraction must be strictly between 0 and 1, got {damaged_fraction!r}"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SynthArgumentError(f"workers must be an integer >= 1, got {workers!r}")
