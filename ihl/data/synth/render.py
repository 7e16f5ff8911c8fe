"""One synthetic image: a backdrop, figures drawn far-to-near into the pixels and into a label
map, and every person's keypoints with the visibility read off that map.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ihl.data.keypoints import COCO, MPII
from ihl.data.synth.figure import Figure, pixel_color

MIN_VISIBLE_AREA = 10
"""Persons with fewer visible pixels are not annotated: nobody could label them."""

_SHIFT = 4
_ONE = 1 << _SHIFT
_PERSON_BITS = 6

_MPII_FROM_NAMED = tuple(
    j.replace("r_", "right_", 1)
    if j.startswith("r_")
    else j.replace("l_", "left_", 1)
    if j.startswith("l_")
    else j
    for j in MPII.joints
)


@dataclass
class Person:
    """One drawn figure and its annotation, in 0-based pixel coordinates."""

    index: int
    """Drawing order in the image: later persons cover earlier ones."""
    points: dict[str, np.ndarray]
    """Projected points, off-image ones included: the COCO joints, MPII's pelvis, thorax,
    upper_neck and head_top, and drawing anchors (head, face, hands, toes)."""
    shows: dict[str, tuple[int, ...]]
    """For each COCO joint, the own parts whose pixels show it: none for a face point
    turned away, only the limb for a shoulder or hip behind the torso."""
    head_box: np.ndarray
    """[[x1, y1], [x2, y2]] around the head circle."""
    keypoints: np.ndarray | None = None
    """(17, 3) COCO keypoints with visibility, set by the render."""
    bbox: tuple[int, int, int, int] | None = None
    area: int = 0

    @property
    def mpii_joints(self) -> np.ndarray:
        return np.array([self.points[j] for j in _MPII_FROM_NAMED])


@dataclass
class Scene:
    image: np.ndarray
    """BGR uint8 image as rendered, before JPEG coding."""
    labels: np.ndarray
    """uint16 map: (person index + 1) << 6 | part code; 0 is background."""
    people: list[Person]

    def owner(self) -> np.ndarray:
        """Index of the person seen at each pixel, -1 for background."""
        return (self.labels >> _PERSON_BITS).astype(np.int32) - 1

    def part(self) -> np.ndarray:
        """Part code (see PART) seen at each pixel, 0 for background."""
        return self.labels & ((1 << _PERSON_BITS) - 1)


def _draw(img: np.ndarray, labels: np.ndarray, prim: tuple, code: int) -> None:
    _, _, kind, pts, size, color, _ = prim
    ip = [tuple(int(round(v * _ONE)) for v in q) for q in pts]
    if kind == "line":
        thick = max(1, round(size))
        cv2.line(img, ip[0], ip[1], color, thick, cv2.LINE_AA, _SHIFT)
        cv2.line(labels, ip[0], ip[1], code, thick, cv2.LINE_8, _SHIFT)
    elif kind == "circle":
        rad = max(_ONE, round(size * _ONE))
        cv2.circle(img, ip[0], rad, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(labels, ip[0], rad, code, -1, cv2.LINE_8, _SHIFT)
    else:
        hull = cv2.convexHull(np.array(ip, np.int32))
        cv2.fillConvexPoly(img, hull, color, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(labels, hull, code, cv2.LINE_8, _SHIFT)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient, blob or flat backdrop with random clutter, some of it limb-like."""
    kind = rng.integers(3)
    if kind == 0:
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ang = rng.uniform(0, 2 * np.pi)
        t = np.cos(ang) * np.arange(w)[None, :] / w + np.sin(ang) * np.arange(h)[:, None] / h
        t = (t - t.min()) / max(np.ptp(t), 1e-6)
        img = (a + (b - a) * t[..., None]).astype(np.uint8)
    elif kind == 1:
        grid = rng.integers(0, 256, (rng.integers(2, 9), rng.integers(2, 9), 3), dtype=np.uint8)
        img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        img = np.empty((h, w, 3), np.uint8)
        img[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    for _ in range(rng.integers(2, 14)):
        color = pixel_color(rng.uniform(0, 255, 3))
        x, y = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        sx, sy = int(rng.integers(4, w // 2)), int(rng.integers(4, h // 2))
        shape = rng.integers(4)
        if shape == 0:
            cv2.rectangle(img, (x, y), (x + sx, y + sy), color, -1)
        elif shape == 1:
            cv2.ellipse(
                img,
                (x, y),
                (sx // 2, sy // 2),
                float(rng.uniform(0, 180)),
                0,
                360,
                color,
                -1,
                cv2.LINE_AA,
            )
        elif shape == 2:
            cv2.line(img, (x, y), (x + sx, y + sy), color, int(rng.integers(1, 12)), cv2.LINE_AA)
        else:
            pts = rng.integers([-w // 4, -h // 4], [w, h], (int(rng.integers(3, 6)), 2))
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
    return img


def _annotate(person: Person, owner: np.ndarray, part: np.ndarray) -> None:
    """COCO keypoints with visibility read off the label map, and the visible box."""
    w, h = owner.shape[1], owner.shape[0]
    kps = np.zeros((COCO.num_joints, 3))
    for j, name in enumerate(COCO.joints):
        x, y = person.points[name]
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            continue
        ix, iy = int(round(x)), int(round(y))
        seen = owner[iy, ix] == person.index and part[iy, ix] in person.shows[name]
        kps[j] = (x, y, 2 if seen else 1)
    person.keypoints = kps
    ys, xs = np.nonzero(owner == person.index)
    person.area = int(len(xs))
    if person.area:
        x0, y0 = int(xs.min()), int(ys.min())
        person.bbox = (x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int] = (320, 240),
    people: tuple[int, int] = (1, 4),
    height_frac: tuple[float, float] = (0.0, 1.05),
    min_height: float = 40.0,
    overflow: float = 0.25,
) -> Scene:
    """Draw one image of ``size`` (W, H) and annotate every person in it.

    Returns the pixels before JPEG coding, the label map the visibility flags were
    read from, and every drawn person (callers drop those under MIN_VISIBLE_AREA).
    Person heights are log-uniform between max(min_height, height_frac[0] * H) and
    height_frac[1] * H; up to ``overflow`` of a figure's extent may leave the frame.
    Figures whose feet are lower are drawn later, as nearer people are.
    """
    w, h = size
    img = _background(rng, w, h)
    labels = np.zeros((h, w), np.uint16)
    n = int(rng.integers(people[0], people[1] + 1))
    lo = max(min_height, height_frac[0] * h)
    hi = max(lo, height_frac[1] * h)
    figs = []
    for _ in range(n):
        fig = Figure(rng, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        a, b = fig.extent()
        ext = b - a
        x0 = sorted((-overflow * ext[0], w - (1 - overflow) * ext[0]))
        y0 = sorted((-overflow * ext[1], h - (1 - overflow) * ext[1]))
        fig.offset = np.array([rng.uniform(*x0), rng.uniform(*y0)]) - a
        figs.append(fig)
    figs.sort(key=lambda f: f.extent()[1][1] + f.offset[1])
    for k, fig in enumerate(figs):
        code = (k + 1) << _PERSON_BITS
        for prim in fig.primitives():
            _draw(img, labels, prim, code | prim[6])
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    sigma = rng.uniform(0, 8)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    img = np.clip(img + noise, 0, 255).astype(np.uint8)

    scene = Scene(img, labels, [])
    owner, part = scene.owner(), scene.part()
    for k, fig in enumerate(figs):
        head = fig.point("head")
        rad = fig.r * fig.px
        person = Person(
            index=k,
            points={name: fig.point(name) for name in fig.uv},
            shows=fig.shows,
            head_box=np.array([head - rad, head + rad]),
        )
        _annotate(person, owner, part)
        scene.people.append(person)
    return scene


def split_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, index])
