"""Radiograph-like limb images drawn with numpy: soft tissue, long bones, fractures.

A picture is built in two pure steps so tests can reason about each:
``sample_scene(rng, ...)`` draws every random choice into a frozen ``Scene``, and
``render(scene)`` turns it into float32 gray in [0, 1] with bone bright (MONOCHROME2
display). The drawing is a small projection model rather than clip art: the limb is
an elliptic cylinder of soft tissue, a long bone is a hollow cylinder whose projected
path length gives the bright cortex lines and the darker medullary cavity for free,
and attenuation becomes film density through ``1 - exp(-k * A)``. Everything is
vectorised over the pixel grid (a few ms for 600 x 600).

Fractures are what a reader looks for: a lucent line through the cortex, transverse
or oblique, slightly jagged, with the distal fragment optionally shifted, overriding
or angulated. Non-fractured bones never carry a lucent line across the cortex (no
nutrient canals, no growth plates), so the task is learnable from pixels alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# 5 x 7 glyphs of the lead side markers radiographers put on the cassette.
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


@dataclass(frozen=True)
class Bone:
    """A long bone in its own frame: +u along the axis from ``origin`` at ``angle``."""

    origin: tuple[float, float]  # (x, y) image pixels
    angle: float  # radians, direction of +u in image coordinates
    radius: float  # shaft outer half-width (px)
    inner_ratio: float  # medullary / outer radius in the shaft
    lo_end: float | None  # u of the lower articular end, None = runs off the image
    hi_end: float | None
    flare: float  # metaphyseal widening at an end, relative to the radius
    marrow: float  # attenuation of the medullary cavity relative to cortex


@dataclass(frozen=True)
class Fracture:
    bone: int  # index into Scene.bones
    u: float  # position along the bone axis (px, bone frame)
    obliquity: float  # radians; 0 = transverse
    gap: float  # width of the lucent line (px)
    shift: float  # transverse displacement of the distal fragment (px)
    overlap: float  # along-axis shift of the distal fragment (px; < 0 overrides)
    angulation: float  # radians, distal fragment rotated about the fracture centre
    stop: float | None  # incomplete fracture: the line only runs where v * side > stop
    jag: tuple[float, float, float, float]  # amplitude (px), frequency, phase, 2nd phase
    subtle: bool


@dataclass(frozen=True)
class Scene:
    height: int
    width: int
    limb_origin: tuple[float, float]
    limb_angle: float
    limb_half_width: float
    bulge: tuple[float, float, float]  # relative amplitude, spatial frequency, phase
    swelling: float  # extra soft tissue around a fracture, relative to the half-width
    bones: tuple[Bone, ...]
    fracture: Fracture | None
    marker: tuple[str, float, float, float] | None  # letter, x, y, glyph pixel size
    collimation: tuple[float, float, float, float, float] | None  # margins l,t,r,b, outside level
    soft_tissue_mu: float
    bone_mu: float
    exposure: float
    gamma: float
    fog: float
    heel: tuple[float, float]  # gradient strength and direction (radians)
    noise: float
    noise_seed: int

    @property
    def fractured(self) -> bool:
        return self.fracture is not None


def sample_scene(
    rng: np.random.Generator, height: int, width: int, *, fractured: bool, subtle_fraction: float = 0.1
) -> Scene:
    """Draw one limb view. Every choice except the fracture itself is class-independent."""
    s = float(min(height, width))
    u01 = rng.uniform
    vertical = rng.random() < 0.75
    angle = (math.pi / 2 if vertical else 0.0) + float(np.clip(rng.normal(0, 0.2), -0.5, 0.5))
    if rng.random() < 0.5:
        angle += math.pi  # which end is proximal on the image varies too
    ca, sa = math.cos(angle), math.sin(angle)
    cx, cy = width / 2 + u01(-0.08, 0.08) * width, height / 2 + u01(-0.08, 0.08) * height
    radius = s * u01(0.055, 0.09)
    limb_half = s * u01(0.22, 0.34)
    flare = u01(0.35, 0.8)
    hi_end = s * u01(0.24, 0.4) if rng.random() < 0.45 else None
    lo_end = -s * u01(0.3, 0.45) if rng.random() < 0.15 else None
    v0 = u01(-0.2, 0.2) * limb_half

    def frame_point(u: float, v: float) -> tuple[float, float]:
        return cx + u * ca - v * sa, cy + u * sa + v * ca

    main = Bone(frame_point(0.0, v0), angle, radius, u01(0.55, 0.72), lo_end, hi_end, flare, u01(0.08, 0.2))
    bones = [main]
    has_parallel = rng.random() < 0.45
    if has_parallel:  # forearm / lower leg: a second, thinner parallel bone
        r2 = radius * u01(0.45, 0.75)
        off = (radius + r2 + s * u01(0.012, 0.05)) * (1 if rng.random() < 0.5 else -1)
        shift_end = u01(-0.4, 0.4) * radius
        tilt = float(np.clip(rng.normal(0, 0.015), -0.03, 0.03))  # small: parallel bones must not cross
        bones.append(Bone(
            frame_point(shift_end, v0 + off), angle + tilt, r2, u01(0.5, 0.68),
            None if lo_end is None else lo_end - shift_end, None if hi_end is None else hi_end - shift_end,
            flare * u01(0.5, 1.0), u01(0.08, 0.2),
        ))
        limb_half = max(limb_half, abs(v0) + abs(off) + r2 + s * 0.06)
    if hi_end is not None:  # the bone across the joint, slightly flexed
        cap = radius * (1 + flare) * 0.45
        gap = s * u01(0.015, 0.03)
        r3 = radius * u01(0.85, 1.2)
        flex = float(np.clip(rng.normal(0, 0.08), -0.2, 0.2))
        cap3 = r3 * (1 + flare) * 0.45
        bones.append(Bone(
            frame_point(hi_end + cap + gap, v0 + u01(-0.15, 0.15) * radius), angle + flex,
            r3, u01(0.55, 0.72), cap3, None, flare * u01(0.8, 1.2), u01(0.08, 0.2),
        ))
    shafts = [0, 1] if has_parallel else [0]  # the bone across a joint is not broken
    fracture = _sample_fracture(rng, s, bones, shafts, subtle_fraction) if fractured else None
    marker = None
    if rng.random() < 0.6:
        px = max(1.0, s * u01(0.006, 0.01))
        mx = u01(0.04, 0.12) * width if rng.random() < 0.5 else width - u01(0.04, 0.12) * width - 5 * px
        my = u01(0.04, 0.12) * height if rng.random() < 0.5 else height - u01(0.04, 0.12) * height - 7 * px
        marker = ("L" if rng.random() < 0.5 else "R", mx, my, px)
    collimation = None
    if rng.random() < 0.3:
        collimation = (*(float(m) for m in u01(0.0, 0.07, 4)), 0.9 if rng.random() < 0.6 else 0.03)
    return Scene(
        height=height, width=width, limb_origin=(cx, cy), limb_angle=angle, limb_half_width=limb_half,
        bulge=(u01(0.0, 0.12), u01(1.0, 3.0) / s, u01(0, 2 * math.pi)),
        swelling=u01(0.04, 0.16) if fracture is not None and not fracture.subtle else 0.0,
        bones=tuple(bones), fracture=fracture, marker=marker, collimation=collimation,
        soft_tissue_mu=u01(0.25, 0.4), bone_mu=u01(0.55, 0.8), exposure=u01(0.4, 0.7),
        gamma=u01(0.75, 1.15), fog=u01(0.0, 0.08), heel=(u01(0.0, 0.12), u01(0, 2 * math.pi)),
        noise=u01(0.008, 0.03), noise_seed=int(rng.integers(2**63)),
    )


def _sample_fracture(
    rng: np.random.Generator, s: float, bones: list[Bone], shafts: list[int], subtle_fraction: float
) -> Fracture:
    u01 = rng.uniform
    index = shafts[-1] if rng.random() < 0.2 else 0
    bone = bones[index]
    lo, hi = -0.25 * s, 0.25 * s  # central: survives a random-resized crop
    if bone.lo_end is not None:
        lo = max(lo, bone.lo_end + 2.5 * bone.radius)
    if bone.hi_end is not None:
        hi = min(hi, bone.hi_end - 2.5 * bone.radius)
    u = u01(lo, hi) if hi > lo else 0.5 * (lo + hi)
    subtle = bool(rng.random() < subtle_fraction)
    obliquity = u01(-0.25, 0.25) if rng.random() < 0.5 else u01(0.4, 0.85) * (1 if rng.random() < 0.5 else -1)
    jag = (bone.radius * u01(0.03, 0.12), u01(2.0, 6.0) / bone.radius, u01(0, 2 * math.pi), u01(0, 2 * math.pi))
    if subtle:
        stop = None
        if rng.random() < 0.5:  # through one cortex only
            stop = u01(-0.3, 0.3) * bone.radius * (1 if rng.random() < 0.5 else -1)
        return Fracture(index, u, obliquity, s * u01(0.004, 0.009), 0.0, 0.0, 0.0, stop, jag, True)
    gap = s * u01(0.022, 0.045)  # 2.5-5 px once the whole image is 112 px
    shift = bone.radius * u01(0.4, 1.2) * (1 if rng.random() < 0.5 else -1) if rng.random() < 0.8 else 0.0
    overlap = -bone.radius * u01(0.2, 0.8) if rng.random() < 0.25 else bone.radius * u01(0.0, 0.3)
    angulation = u01(0.1, 0.4) * (1 if rng.random() < 0.5 else -1) if rng.random() < 0.55 else 0.0
    return Fracture(index, u, obliquity, gap, shift, overlap, angulation, None, jag, False)


# ---------------------------------------------------------------- rendering


def render(scene: Scene) -> np.ndarray:
    """The scene as float32 (H, W) in [0, 1], bone bright."""
    rng = np.random.default_rng(scene.noise_seed)
    h, w = scene.height, scene.width
    s = float(min(h, w))
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    tissue, bone = anatomy_maps(scene, rng)
    atten = scene.soft_tissue_mu * tissue + scene.bone_mu * bone
    if scene.marker is not None:
        atten += 4.0 * _marker_mask(h, w, scene.marker)
    k = scene.exposure
    # normalised so a single bone in thick tissue stays below white; overlapping
    # fragments or bones are brighter still and only then approach saturation
    density = (1.0 - np.exp(-k * atten)) / (1.0 - math.exp(-k * 2.6))
    strength, direction = scene.heel
    ramp = (x - w / 2) * math.cos(direction) + (y - h / 2) * math.sin(direction)
    density = density * (1.0 + strength * ramp / s)
    density = _box_blur(density, 1 if s < 1000 else 2)  # detector blur
    img = scene.fog + (1.0 - scene.fog) * np.clip(density, 0.0, 1.0) ** scene.gamma
    grain = _box_blur(rng.standard_normal((h, w), dtype=np.float32), 1) * 2.0
    img = img + scene.noise * (0.6 * grain + 0.5 * rng.standard_normal((h, w), dtype=np.float32))
    if scene.collimation is not None:
        img = _collimate(img, scene.collimation, rng)
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def anatomy_maps(scene: Scene, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Projected soft-tissue thickness and bone attenuation maps (H, W), before exposure.

    ``render`` passes its own generator (the bone texture draws from it); tests call this
    without one to find where bone and soft tissue are.
    """
    rng = rng if rng is not None else np.random.default_rng(scene.noise_seed)
    h, w = scene.height, scene.width
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    texture = _ValueNoise(rng, h, w, max(2, int(min(h, w) * 0.006)))  # cancellous bone
    bone = np.zeros((h, w), np.float32)
    for i, b in enumerate(scene.bones):
        f = scene.fracture if scene.fracture is not None and scene.fracture.bone == i else None
        bone += _bone_with_fracture(x, y, b, f, texture)
    return _soft_tissue(x, y, scene), bone


def _frame(x: np.ndarray, y: np.ndarray, origin: tuple[float, float], angle: float):
    dx, dy = x - np.float32(origin[0]), y - np.float32(origin[1])
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return dx * c + dy * s, dy * c - dx * s


def _soft_tissue(x, y, scene: Scene) -> np.ndarray:
    """Projected thickness of an elliptic cylinder (0..2), wavy along its length."""
    u, v = _frame(x, y, scene.limb_origin, scene.limb_angle)
    amp, freq, phase = scene.bulge
    half = scene.limb_half_width * (1.0 + amp * np.sin(u * np.float32(freq) + np.float32(phase)))
    f = scene.fracture
    if f is not None and scene.swelling > 0:
        b = scene.bones[f.bone]
        uf, _ = _frame(*_to_image(b, f.u, 0.0), scene.limb_origin, scene.limb_angle)
        half = half * (1.0 + scene.swelling * np.exp(-(((u - uf) / (3.0 * b.radius)) ** 2)))
    return 2.0 * np.sqrt(np.maximum(1.0 - (v / half) ** 2, 0.0))


def _to_image(b: Bone, u: float, v: float) -> tuple[float, float]:
    c, s = math.cos(b.angle), math.sin(b.angle)
    return b.origin[0] + u * c - v * s, b.origin[1] + u * s + v * c


def _bone_profile(u: np.ndarray, v: np.ndarray, b: Bone, texture: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Projected attenuation of a hollow cylinder with flared, capped ends (radius units)."""
    radius = np.full(u.shape, b.radius, np.float32)
    near_end = np.zeros(u.shape, np.float32)
    flare_len = 2.2 * b.radius
    for end, side in ((b.lo_end, -1.0), (b.hi_end, 1.0)):
        if end is None:
            continue
        t = (u - np.float32(end)) * np.float32(side)  # > 0 beyond the articular end
        near = np.exp(-((np.minimum(t, 0.0) / flare_len) ** 2))
        radius = radius * (1.0 + b.flare * near)
        cap = b.radius * (1.0 + b.flare) * 0.45
        radius = radius * np.sqrt(np.clip(1.0 - (np.maximum(t, 0.0) / cap) ** 2, 0.0, 1.0))
        near_end = np.maximum(near_end, near)
    inner = radius * (b.inner_ratio + (0.85 - b.inner_ratio) * near_end)
    v2 = v * v
    outer_path = 2.0 * np.sqrt(np.maximum(radius * radius - v2, 0.0))
    inner_path = 2.0 * np.sqrt(np.maximum(inner * inner - v2, 0.0))
    # cancellous bone at the ends is denser and textured; the shaft cavity is smooth marrow
    # (texture is sampled only near an end: most shafts never need it)
    marrow = b.marrow + 0.2 * near_end
    ends = np.flatnonzero(near_end > 1e-3)
    if ends.size:
        marrow[ends] += 0.12 * near_end[ends] * texture(ends)
    return ((outer_path - inner_path) + marrow * inner_path) / np.float32(b.radius)


def _fracture_distance(u, v, f: Fracture) -> np.ndarray:
    amp, freq, p1, p2 = f.jag
    freq = np.float32(freq)
    jag = amp * (np.sin(v * freq + np.float32(p1)) + 0.5 * np.sin(v * (2.3 * freq) + np.float32(p2)))
    return (u - np.float32(f.u) - np.float32(math.tan(f.obliquity)) * v - jag) * np.float32(math.cos(f.obliquity))


def _ramp(d: np.ndarray) -> np.ndarray:
    """Antialiased step: 0 below -0.5 px, 1 above +0.5 px."""
    return np.clip(d + 0.5, 0.0, 1.0)


def _bone_with_fracture(x, y, b: Bone, f: Fracture | None, texture: _ValueNoise) -> np.ndarray:
    """Attenuation of one bone over the whole image, evaluated only on the band of
    pixels the bone can reach (about a fifth of the image): that is most of the speed."""
    w = x.shape[1]
    out = np.zeros(y.shape[0] * w, np.float32)
    reach = np.float32(b.radius * (1.0 + b.flare) + 2.0)
    u, v = (a.ravel() for a in _frame(x, y, b.origin, b.angle))
    band = np.flatnonzero(np.abs(v) < reach)
    ub, vb = u[band], v[band]

    def tex(i: np.ndarray) -> np.ndarray:
        return texture.at(band[i], w)

    if f is None:
        out[band] = _bone_profile(ub, vb, b, tex)
        return out.reshape(y.shape[0], w)
    half = np.float32(f.gap / 2)
    if f.stop is not None:  # incomplete: lucent line from one cortex part-way across
        side = np.float32(1.0 if f.stop >= 0 else -1.0)
        in_gap = _ramp(half - np.abs(_fracture_distance(ub, vb, f))) * _ramp(vb * side - np.float32(abs(f.stop)))
        out[band] = _bone_profile(ub, vb, b, tex) * (1.0 - in_gap)
        return out.reshape(y.shape[0], w)
    out[band] = _bone_profile(ub, vb, b, tex) * _ramp(-_fracture_distance(ub, vb, f) - half)
    # distal fragment: undo its displacement and angulation about the fracture centre
    du, dv = u - np.float32(f.u + f.overlap), v - np.float32(f.shift)
    c, s = np.float32(math.cos(f.angulation)), np.float32(math.sin(f.angulation))
    v2 = dv * c - du * s
    band = np.flatnonzero(np.abs(v2) < reach)
    u2, v2 = np.float32(f.u) + du[band] * c + dv[band] * s, v2[band]
    out[band] += _bone_profile(u2, v2, b, lambda i: texture.at(band[i], w)) * _ramp(
        _fracture_distance(u2, v2, f) - half)
    return out.reshape(y.shape[0], w)


def _marker_mask(h: int, w: int, marker: tuple[str, float, float, float]) -> np.ndarray:
    letter, mx, my, px = marker
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]], np.float32)
    k = max(1, int(round(px)))
    big = np.kron(glyph, np.ones((k, k), np.float32))
    big = np.pad(big, k, constant_values=0.0)
    big[:k // 2 + 1, :] = big[-(k // 2 + 1):, :] = 0.35  # the marker's plastic frame
    big[:, :k // 2 + 1] = big[:, -(k // 2 + 1):] = 0.35
    mask = np.zeros((h, w), np.float32)
    x0, y0 = int(np.clip(mx, 0, max(0, w - big.shape[1]))), int(np.clip(my, 0, max(0, h - big.shape[0])))
    bh, bw = min(big.shape[0], h - y0), min(big.shape[1], w - x0)
    mask[y0:y0 + bh, x0:x0 + bw] = big[:bh, :bw]
    return mask


def _collimate(img: np.ndarray, collimation, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape
    left, top, right, bottom, level = collimation
    inside = np.zeros((h, w), bool)
    inside[int(top * h):h - int(bottom * h), int(left * w):w - int(right * w)] = True
    outside = level + 0.01 * rng.standard_normal((h, w), dtype=np.float32)
    return np.where(inside, img, outside)


def _box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Separable (2r+1)^2 mean filter by cumulative sums, edges replicated."""
    if r < 1:
        return a
    if r == 1:  # the common case: three shifted views per axis beat cumulative sums
        p = np.pad(a, 1, mode="edge")
        a = p[:-2] + p[1:-1] + p[2:]
        return (a[:, :-2] + a[:, 1:-1] + a[:, 2:]) * np.float32(1 / 9)
    k = 2 * r + 1
    c = np.cumsum(np.pad(a, ((r + 1, r), (0, 0)), mode="edge"), axis=0, dtype=np.float32)
    a = (c[k:] - c[:-k]) / np.float32(k)
    c = np.cumsum(np.pad(a, ((0, 0), (r + 1, r)), mode="edge"), axis=1, dtype=np.float32)
    a = (c[:, k:] - c[:, :-k]) / np.float32(k)
    return a.astype(np.float32, copy=False)


class _ValueNoise:
    """Value noise (a coarse normal grid, smoothstep-interpolated) sampled at chosen pixels."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, cell: int):
        self.grid = rng.standard_normal((h // cell + 2, w // cell + 2), dtype=np.float32)
        self.cell = np.float32(cell)

    def at(self, flat_index: np.ndarray, width: int) -> np.ndarray:
        ys = (flat_index // width).astype(np.float32) / self.cell
        xs = (flat_index % width).astype(np.float32) / self.cell
        y0, x0 = ys.astype(np.intp), xs.astype(np.intp)
        fy, fx = ys - y0, xs - x0
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
        g = self.grid
        top = g[y0, x0] * (1 - fx) + g[y0, x0 + 1] * fx
        bottom = g[y0 + 1, x0] * (1 - fx) + g[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy
