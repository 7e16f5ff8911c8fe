"""Synthetic pose datasets written in the exact COCO and MPII layouts.

The pipeline has to run end to end where the real datasets cannot be
downloaded (a laptop CPU, CI), so this module draws articulated figures and
writes them where ``data/coco`` and ``data/mpii`` would be: the same loaders,
evaluators and detection-box paths then run unchanged on real and synthetic
data.

The data is meant to be learnable and honest:

* Figures are 3-D stick bodies (torso box, thick limbs, head with face and
  hair) posed with plausible joint angles, turned to any yaw and drawn
  far-to-near. The figure's own left limbs are strongly tinted red and its
  right limbs blue (75-90% tint over the clothes' colour), in every image and
  whatever way it faces, so left and right can be told apart from pixels. A
  mirrored figure keeps its colours, so horizontal-flip augmentation and the
  flip test would contradict that cue: train and test on this data without
  them (``data.flip_prob: 0``, ``test.flip: false``, as the ``sample`` preset
  does).
* Visibility comes from the render itself: every person and body part is also
  drawn into a label map. A keypoint is v=2 when the pixel under it belongs to
  one of its own parts (and, for face points, the feature faces the camera),
  v=1 when something else is on top (a later person, or the figure's own
  torso or limb), v=0 with (0, 0, 0) when it lies outside the image.

Conventions: keypoints are OpenCV pixel coordinates (pixel centres at
integers, 0-based) in the COCO files; boxes are COCO ``[x, y, w, h]`` over the
person's visible pixels (x = leftmost pixel index, w = number of columns), and
``area`` is the visible pixel count. The MPII files use MPII's own 1-based
(MATLAB) coordinates, as the released ``mpii_{train,val}.json`` and
``mpii_gt_val.mat`` do: subtract 1 to get 0-based pixels. Every image draws from
its own generator seeded by ``(seed, split, index)``, so output is
byte-identical for a seed and independent of the other split's size.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from ihl.data.keypoints import COCO, MPII

JPEG_QUALITY = 90
MIN_VISIBLE_AREA = 10
"""Persons with fewer visible pixels are not annotated: nobody could label them."""
MIN_KEYPOINT_AREA = 32 * 32
"""Persons with fewer visible pixels in a 320x240 COCO image get a box but no keypoints
(num_keypoints 0), as COCO leaves its small persons unannotated (its keypoint metrics have
no small range). Other image sizes scale it with their area (see min_keypoint_area)."""
_DEFAULT_SIZE = (320, 240)

_SHIFT = 4
_ONE = 1 << _SHIFT
_PERSON_BITS = 6

_PARTS = (
    "torso",
    "neck",
    "head",
    "left_upper_arm",
    "left_forearm",
    "left_hand",
    "right_upper_arm",
    "right_forearm",
    "right_hand",
    "left_thigh",
    "left_shin",
    "left_foot",
    "right_thigh",
    "right_shin",
    "right_foot",
)
PART = {name: i + 1 for i, name in enumerate(_PARTS)}
"""Part codes in the label map (0 is background)."""


def _joint_parts() -> dict[str, tuple[int, ...]]:
    """The parts whose pixels count as showing each COCO joint."""
    out = {name: (PART["head"],) for name in COCO.joints[:5]}
    for side in ("left", "right"):
        for joint, parts in {
            "shoulder": ("torso", "upper_arm"),
            "elbow": ("upper_arm", "forearm"),
            "wrist": ("forearm", "hand"),
            "hip": ("torso", "thigh"),
            "knee": ("thigh", "shin"),
            "ankle": ("shin", "foot"),
        }.items():
            out[f"{side}_{joint}"] = tuple(
                PART[p if p == "torso" else f"{side}_{p}"] for p in parts
            )
    return out


_JOINT_PARTS = _joint_parts()
_MPII_FROM_NAMED = tuple(
    j.replace("r_", "right_", 1)
    if j.startswith("r_")
    else j.replace("l_", "left_", 1)
    if j.startswith("l_")
    else j
    for j in MPII.joints
)
_MPII_EVAL_NAMES = (
    "rank",
    "rkne",
    "rhip",
    "lhip",
    "lkne",
    "lank",
    "pelv",
    "thor",
    "neck",
    "head",
    "rwri",
    "relb",
    "rsho",
    "lsho",
    "lelb",
    "lwri",
)
"""``dataset_joints`` of the official MPII gt file, which the HRNet evaluator reads."""

_LEFT_TINT = np.array([40.0, 40.0, 215.0])
_RIGHT_TINT = np.array([215.0, 95.0, 30.0])
_SKIN = np.array(
    [[205, 220, 245], [160, 190, 230], [120, 160, 215], [80, 120, 175], [50, 75, 115]], float
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


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _direction(sagittal: float, lateral: float, side: int) -> np.ndarray:
    """Unit limb direction in a body frame (x = figure's left, y = down, z = front).

    sagittal swings the limb forward (90 deg: horizontal forward, 180: up), lateral
    lifts it sideways away from the body on the given side.
    """
    s, t = np.radians(sagittal), np.radians(lateral)
    return np.array([side * np.sin(t), np.cos(s) * np.cos(t), np.sin(s) * np.cos(t)])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a * (1 - t) + b * t


def _color(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(c, 0, 255))


_LEG_MODES = {
    # name: (thigh sagittal, thigh lateral, knee flexion, torso lean), degrees
    "stand": ((-10, 15), (-3, 12), (0, 15), (-8, 12)),
    "walk": ((-30, 40), (-3, 10), (0, 60), (-5, 15)),
    "sit": ((60, 100), (-5, 25), (60, 110), (-10, 25)),
    "crouch": ((70, 120), (0, 35), (100, 145), (15, 45)),
    "free": ((-30, 110), (-5, 40), (0, 130), (-10, 35)),
}
_LEG_MODE_P = np.array([0.3, 0.3, 0.15, 0.1, 0.15])


def _sample_pose(rng: np.random.Generator) -> dict:
    """Joint angles and proportions of one figure (lengths in units of body height)."""
    mode = list(_LEG_MODES)[rng.choice(len(_LEG_MODES), p=_LEG_MODE_P)]
    thigh_s, thigh_l, knee, lean = _LEG_MODES[mode]
    legs = {
        side: (rng.uniform(*thigh_s), rng.uniform(*thigh_l), rng.uniform(*knee))
        for side in ("left", "right")
    }
    arms = {}
    for side in ("left", "right"):
        if rng.random() < 0.35:
            arms[side] = (rng.uniform(-15, 25), rng.uniform(3, 25), rng.uniform(0, 40))
        else:
            arms[side] = (rng.uniform(-40, 190), rng.uniform(0, 95), rng.uniform(0, 150))
    yaw = rng.uniform(-np.pi, np.pi) if rng.random() < 0.6 else rng.normal(0, 0.5)
    roll = rng.normal(0, 0.12) if rng.random() < 0.9 else rng.uniform(-1.0, 1.0)
    return {
        "legs": legs,
        "arms": arms,
        "yaw": yaw,
        "roll": roll,
        "lean": np.radians(rng.uniform(*lean)),
        "bend": np.radians(rng.uniform(-10, 10)),
        "twist": np.radians(rng.uniform(-20, 20)),
        "head_yaw": np.radians(rng.uniform(-40, 40)),
        "head_pitch": np.radians(rng.uniform(-25, 20)),
        "width": rng.uniform(0.8, 1.3),
        "arm_len": rng.uniform(0.9, 1.1),
        "leg_len": rng.uniform(0.9, 1.1),
        "head_r": 0.062 * rng.uniform(0.9, 1.15),
    }


def _sample_colors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    skin = _SKIN[rng.integers(len(_SKIN))] + rng.uniform(-12, 12, 3)
    return {
        "skin": skin,
        "shirt": rng.uniform(20, 235, 3),
        "pants": rng.uniform(15, 200, 3),
        "hair": rng.uniform(10, 110, 3) * rng.uniform(0.4, 1.0),
        "shoe": rng.uniform(10, 90, 3),
        "tint": rng.uniform(0.75, 0.9),
    }


class _Figure:
    """A posed 3-D figure, projected to the image, with its drawing primitives."""

    def __init__(self, rng: np.random.Generator, height_px: float):
        p = _sample_pose(rng)
        c = _sample_colors(rng)
        w, r = p["width"], p["head_r"]
        pts: dict[str, np.ndarray] = {"pelvis": np.zeros(3)}
        torso = _ry(p["twist"]) @ _rx(-p["lean"]) @ _rz(p["bend"])
        up, lat, fwd = torso @ [0, -1, 0], torso @ [1, 0, 0], torso @ [0, 0, 1]
        pts["thorax"] = up * 0.29
        pts["upper_neck"] = pts["thorax"] + up * 0.045
        head = torso @ _ry(p["head_yaw"]) @ _rx(p["head_pitch"])
        pts["head"] = pts["upper_neck"] + head @ [0, -0.85 * r, 0.15 * r]
        pts["head_top"] = pts["head"] + head @ [0, -r, 0]
        normals = {
            "nose": head @ [0, 0.15, 1.0],
            "left_eye": head @ [0.38, -0.12, 0.9],
            "right_eye": head @ [-0.38, -0.12, 0.9],
            "left_ear": head @ [1.0, 0.05, -0.05],
            "right_ear": head @ [-1.0, 0.05, -0.05],
        }
        for name, n in normals.items():
            pts[name] = pts["head"] + n * r * (1.05 if name == "nose" else 0.95)
        pts["face"] = pts["head"] + head @ [0, 0.12 * r, 0.3 * r]
        for side, sgn in (("left", 1), ("right", -1)):
            s, t, e = p["arms"][side]
            pts[f"{side}_shoulder"] = pts["thorax"] + lat * sgn * 0.115 * w
            pts[f"{side}_elbow"] = (
                pts[f"{side}_shoulder"] + torso @ _direction(s, t, sgn) * 0.175 * p["arm_len"]
            )
            forearm = torso @ _direction(min(s + e, 200), t * rng.uniform(0.2, 1), sgn)
            pts[f"{side}_wrist"] = pts[f"{side}_elbow"] + forearm * 0.155 * p["arm_len"]
            pts[f"{side}_hand"] = pts[f"{side}_wrist"] + forearm * 0.025
            s, t, e = p["legs"][side]
            pts[f"{side}_hip"] = np.array([sgn * 0.08 * w, 0, 0])
            pts[f"{side}_knee"] = pts[f"{side}_hip"] + _direction(s, t, sgn) * 0.24 * p["leg_len"]
            pts[f"{side}_ankle"] = (
                pts[f"{side}_knee"] + _direction(s - e, t * 0.5, sgn) * 0.235 * p["leg_len"]
            )
            pts[f"{side}_toe"] = pts[f"{side}_ankle"] + np.array([sgn * 0.012, 0.025, 0.065])

        # Torso box corners, so the torso keeps its depth when seen from the side.
        corners = [
            base + lat * a * half + fwd * d * 0.065 * w
            for base, half in ((pts["thorax"] + up * 0.015, 0.13 * w), (pts["pelvis"], 0.115 * w))
            for a in (-1, 1)
            for d in (-1, 1)
        ]
        names = list(pts)
        world = np.array([pts[n] for n in names] + corners)
        world = world @ _ry(p["yaw"]).T
        cr, sr = np.cos(p["roll"]), np.sin(p["roll"])
        uv = world[:, :2] @ np.array([[cr, sr], [-sr, cr]]) * height_px
        self.uv = {n: uv[i] for i, n in enumerate(names)}
        self.depth = {n: world[i, 2] for i, n in enumerate(names)}
        self.corners = uv[len(names) :]
        self.torso_depth = 0.5 * (self.depth["thorax"] + self.depth["pelvis"])
        yaw = _ry(p["yaw"])
        # Ears and nose stick out, so they still show when turned a little away.
        limit = {"nose": -0.2, "left_ear": -0.35, "right_ear": -0.35}
        self.facing = {n: bool((yaw @ v)[2] > limit.get(n, 0.05)) for n, v in normals.items()}
        self.shows = dict(_JOINT_PARTS)
        for name in self.facing:
            self.shows[name] = _JOINT_PARTS[name] if self.facing[name] else ()
        for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
            if self.depth[name] < self.torso_depth - 0.07:
                self.shows[name] = tuple(q for q in _JOINT_PARTS[name] if q != PART["torso"])
        self.face_visible = bool((yaw @ head @ [0, 0, 1])[2] > -0.15)
        self.px = height_px
        self.r = r
        self.w = w
        self.colors = c
        self.offset = np.zeros(2)

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        allp = np.concatenate([np.array(list(self.uv.values())), self.corners])
        pad = self.r * self.px
        return allp.min(0) - pad, allp.max(0) + pad

    def point(self, name: str) -> np.ndarray:
        return self.uv[name] + self.offset

    def primitives(self) -> list[tuple]:
        """(depth, seq, kind, points, size_px, color, part), drawn in ascending depth."""
        c, px, w, r = self.colors, self.px, self.w, self.r
        prims: list[tuple] = []

        def add(depth, kind, names_or_pts, size, color, part):
            pts = [self.point(n) if isinstance(n, str) else n for n in names_or_pts]
            prims.append((depth, len(prims), kind, pts, size * px, color, PART[part]))

        def shade(col, depth):
            return _color(col * (0.82 if depth < self.torso_depth else 1.0))

        add(self.torso_depth - 1, "line", ("thorax", "head"), 0.05 * w, _color(c["skin"]), "neck")
        add(
            self.torso_depth,
            "poly",
            list(self.corners + self.offset),
            0,
            _color(c["shirt"]),
            "torso",
        )
        for side in ("left", "right"):
            tint = _LEFT_TINT if side == "left" else _RIGHT_TINT
            arm = _mix(c["shirt"], tint, c["tint"])
            leg = _mix(c["pants"], tint, c["tint"])
            limbs = (
                ("upper_arm", "shoulder", "elbow", 0.055 * w, arm),
                ("forearm", "elbow", "wrist", 0.045 * w, arm * 0.7 + 60),
                ("hand", "wrist", "hand", 0.05, _mix(c["skin"], tint, 0.4)),
                ("thigh", "hip", "knee", 0.085 * w, leg),
                ("shin", "knee", "ankle", 0.062 * w, leg * 0.75),
                ("foot", "ankle", "toe", 0.035, _mix(c["shoe"], tint, 0.35)),
            )
            for part, a, b, size, col in limbs:
                depth = 0.5 * (self.depth[f"{side}_{a}"] + self.depth[f"{side}_{b}"])
                add(
                    depth,
                    "line",
                    (f"{side}_{a}", f"{side}_{b}"),
                    size,
                    shade(col, depth),
                    f"{side}_{part}",
                )

        hd = self.depth["head"]
        add(hd, "circle", ("head",), r, _color(c["hair"]), "head")
        if self.face_visible:
            add(hd, "circle", ("face",), 0.72 * r, _color(c["skin"]), "head")
        features = (
            ("left_ear", 0.22, _mix(c["skin"], _LEFT_TINT, 0.45)),
            ("right_ear", 0.22, _mix(c["skin"], _RIGHT_TINT, 0.45)),
            ("left_eye", 0.13, np.array([30.0, 30.0, 120.0])),
            ("right_eye", 0.13, np.array([120.0, 40.0, 20.0])),
            ("nose", 0.15, c["skin"] * 0.55),
        )
        for name, size, col in features:
            if self.facing[name]:
                add(hd, "circle", (name,), size * r, _color(col), "head")
        return sorted(prims, key=lambda q: (q[0], q[1]))


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
        color = _color(rng.uniform(0, 255, 3))
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
        fig = _Figure(rng, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
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


def _split_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, index])


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path.name}")
    path.write_bytes(buf.tobytes())


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.is_file() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it"
        )


@contextmanager
def _atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a sibling scratch directory that becomes out_dir only if the body succeeds.

    A crash leaves out_dir as it was (absent, or the previous dataset) instead of a
    half-written dataset that later stages would silently read.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{token}")
    tmp.mkdir()
    try:
        yield tmp
        _check_target(out_dir, overwrite)
        if out_dir.is_dir() and any(out_dir.iterdir()):
            old = out_dir.with_name(f".{out_dir.name}.old-{token}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _r2(values) -> list[float]:
    return [round(float(v), 2) for v in values]


def min_keypoint_area(image_size: tuple[int, int]) -> float:
    """MIN_KEYPOINT_AREA for images of ``image_size`` (W, H): scaled with the image area, so the
    share of annotated persons does not depend on the image size (tiny test sets keep some)."""
    return MIN_KEYPOINT_AREA * image_size[0] * image_size[1] / (_DEFAULT_SIZE[0] * _DEFAULT_SIZE[1])


def _coco_annotation(person: Person, image_id: int, min_area: float) -> dict:
    kps = person.keypoints if person.area >= min_area else np.zeros((COCO.num_joints, 3))
    flat = []
    for x, y, v in kps:
        flat += [round(float(x), 2), round(float(y), 2), int(v)] if v else [0, 0, 0]
    x, y, w, h = person.bbox
    return {
        "id": image_id * 100 + person.index + 1,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [x, y, w, h],
        "area": person.area,
        "iscrowd": 0,
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "keypoints": flat,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
    }


def _jitter_box(rng: np.random.Generator, box, pos: float, size: float, w: int, h: int):
    x, y, bw, bh = box
    cx = x + bw * (0.5 + rng.normal(0, pos))
    cy = y + bh * (0.5 + rng.normal(0, pos))
    bw, bh = bw * np.exp(rng.normal(0, size)), bh * np.exp(rng.normal(0, size))
    x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
    x1, y1 = min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def _detections(
    rng: np.random.Generator, people: list[Person], image_id: int, size: tuple[int, int]
) -> list[dict]:
    """Boxes as a person detector would give them: jittered, duplicated, sometimes wrong.

    Small people are missed more often and score lower; each found person may get
    low-scoring near-duplicates; every image gets a few low-scoring false positives.
    """
    w, h = size
    found = []
    for p in people:
        side = np.sqrt(p.area)
        if rng.random() < 0.02 + 0.3 * np.exp(-side / 12):
            continue
        score = float(np.clip(rng.normal(0.95, 0.03) - 0.4 * np.exp(-side / 20), 0.2, 0.999))
        found.append((_jitter_box(rng, p.bbox, 0.04, 0.06, w, h), score))
        for _ in range(rng.poisson(0.6)):
            found.append(
                (_jitter_box(rng, p.bbox, 0.15, 0.2, w, h), score * rng.uniform(0.05, 0.45))
            )
    for _ in range(rng.poisson(1.5)):
        bw = float(np.exp(rng.uniform(np.log(12), np.log(0.6 * w))))
        bh = bw * rng.uniform(1.0, 3.0)
        box = (rng.uniform(0, w - bw), rng.uniform(*sorted((-0.2 * bh, h - 0.8 * bh))), bw, bh)
        found.append((_jitter_box(rng, box, 0, 0, w, h), rng.uniform(0.01, 0.3)))
    dets = [
        {"image_id": image_id, "category_id": 1, "bbox": _r2(box), "score": round(float(s), 4)}
        for box, s in found
        if box is not None
    ]
    return sorted(dets, key=lambda d: -d["score"])


def _coco_categories() -> list[dict]:
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(COCO.joints),
            "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
        }
    ]


def make_coco_synth(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = _DEFAULT_SIZE,
    seed: int = 0,
    max_people: int = 4,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a synthetic person-keypoint dataset in the COCO 2017 layout.

    Creates ``annotations/person_keypoints_{train,val}2017.json``,
    ``{train,val}2017/*.jpg`` and
    ``person_detection_results/COCO_val2017_detections_AP_H_56_person.json``.
    Train image ids are 1.., val ids 1000001..; annotation id = image id * 100 + k.
    Persons whose joints all left the frame, or under ``min_keypoint_area`` visible pixels,
    are kept with num_keypoints 0, as COCO keeps them. Returns counts: images, persons
    and persons with keypoints per split, and val detections.
    """
    if not 1 <= max_people <= 99:
        raise ValueError("max_people must be between 1 and 99")
    out_dir = Path(out_dir)
    summary: dict[str, int] = {}
    min_area = min_keypoint_area(image_size)
    with _atomic_dir(out_dir, overwrite) as tmp:
        (tmp / "annotations").mkdir()
        (tmp / "person_detection_results").mkdir()
        detections: list[dict] = []
        for split_id, (split, count, base) in enumerate(
            (("train", num_train, 1), ("val", num_val, 1_000_001))
        ):
            image_dir = tmp / f"{split}2017"
            image_dir.mkdir()
            images, annotations = [], []
            for i in range(count):
                rng = _split_rng(seed, split_id, i)
                scene = render_scene(rng, image_size, (1, max_people))
                image_id = base + i
                name = f"{image_id:012d}.jpg"
                _write_jpeg(image_dir / name, scene.image)
                images.append(
                    {
                        "id": image_id,
                        "file_name": name,
                        "width": image_size[0],
                        "height": image_size[1],
                        "license": 1,
                    }
                )
                people = [p for p in scene.people if p.area >= MIN_VISIBLE_AREA]
                annotations += [_coco_annotation(p, image_id, min_area) for p in people]
                if split == "val":
                    detections += _detections(rng, people, image_id, image_size)
            _write_json(
                tmp / "annotations" / f"person_keypoints_{split}2017.json",
                {
                    "info": {
                        "description": f"ihl synthetic COCO-format person keypoints ({split})",
                        "version": "1.0",
                        "year": 2017,
                        "contributor": "ihl.data.synth",
                        "seed": seed,
                    },
                    "licenses": [{"id": 1, "name": "Synthetic, generated by ihl", "url": ""}],
                    "images": images,
                    "annotations": annotations,
                    "categories": _coco_categories(),
                },
            )
            summary[f"{split}_images"] = len(images)
            summary[f"{split}_persons"] = len(annotations)
            summary[f"{split}_persons_with_keypoints"] = sum(
                a["num_keypoints"] > 0 for a in annotations
            )
        _write_json(
            tmp / "person_detection_results" / "COCO_val2017_detections_AP_H_56_person.json",
            detections,
        )
        summary["val_detections"] = len(detections)
    return summary


def _mpii_entry(person: Person, name: str, size: tuple[int, int]) -> dict | None:
    """One MPII json record in MPII's 1-based coordinates; None if nothing is annotatable."""
    w, h = size
    joints = person.mpii_joints
    vis = (
        (joints[:, 0] >= 0)
        & (joints[:, 0] <= w - 1)
        & (joints[:, 1] >= 0)
        & (joints[:, 1] <= h - 1)
    )
    if not vis.any():
        return None
    extent = np.clip(np.concatenate([joints[vis], person.head_box]), 0, [w - 1, h - 1])
    lo, hi = extent.min(0), extent.max(0)
    return {
        "image": name,
        "center": _r2((lo + hi) / 2 + 1),
        "scale": round(float((hi - lo).max()) / 200, 6),
        "joints": [_r2(j + 1) if v else [-1.0, -1.0] for j, v in zip(joints, vis, strict=True)],
        "joints_vis": [int(v) for v in vis],
    }


def _write_mpii_gt(path: Path, entries: list[dict], head_boxes: list[np.ndarray]) -> None:
    """The layout of the released ``mpii_gt_val.mat``, one person per entry of the val json.

    pos_gt_src (16, 2, N): joint x, y, 1-based (-1 where missing, as in the json), so
    that HRNet's ``np.transpose(preds, [1, 2, 0])`` of (N, 16, 2) predictions lines up
    with it; jnt_missing (16, N): 1 where the joint is not annotated; headboxes_src
    (2, 2, N): [top-left, bottom-right] x [x, y] of the head box, 1-based;
    dataset_joints: the official joint abbreviations the evaluator looks joints up by.
    """
    n = len(entries)
    pos = np.array([e["joints"] for e in entries], float).reshape(n, 16, 2).transpose(1, 2, 0)
    missing = 1 - np.array([e["joints_vis"] for e in entries], np.uint8).reshape(n, 16).T
    boxes = np.array(head_boxes, float).reshape(n, 2, 2).transpose(1, 2, 0) + 1
    names = np.empty((1, 16), object)
    names[0, :] = _MPII_EVAL_NAMES
    buf = io.BytesIO()
    scipy.io.savemat(
        buf,
        {
            "dataset_joints": names,
            "jnt_missing": missing,
            "pos_gt_src": pos,
            "headboxes_src": boxes,
        },
    )
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by ihl.data.synth".ljust(116)
    path.write_bytes(bytes(data))


def make_mpii_synth(
    out_dir: str | Path,
    num_train: int,
    num_val: int,
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    max_people: int = 3,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a synthetic dataset in the MPII layout HRNet's pose code reads.

    Creates ``annotations/mpii_{train,val}.json`` (entries: image, center, scale,
    joints [16 x 2], joints_vis [16]), ``annotations/mpii_gt_val.mat`` and
    ``images/*.jpg``. Coordinates are 1-based like the released files. The person box
    spans the annotated joints and the head box (clipped to the image), occluded joints
    included, as MPII's centre and scale describe the whole person; center is its
    middle and scale its longer side / 200 (the height for upright figures), so the
    square MPII crop also holds a lying figure. joints_vis marks annotated (in-image)
    joints, occluded ones included, as MPII does. Persons are larger than in the COCO
    variant, as MPII's are. Returns image and person counts per split.
    """
    if not 1 <= max_people <= 99:
        raise ValueError("max_people must be between 1 and 99")
    summary: dict[str, int] = {}
    with _atomic_dir(Path(out_dir), overwrite) as tmp:
        (tmp / "annotations").mkdir()
        (tmp / "images").mkdir()
        for split_id, (split, count, base) in enumerate(
            (("train", num_train, 0), ("val", num_val, 1_000_000))
        ):
            entries, head_boxes = [], []
            for i in range(count):
                rng = _split_rng(seed, 2 + split_id, i)
                scene = render_scene(
                    rng, image_size, (1, max_people), height_frac=(0.4, 1.0), overflow=0.15
                )
                name = f"{base + i:09d}.jpg"
                _write_jpeg(tmp / "images" / name, scene.image)
                for person in scene.people:
                    entry = (
                        _mpii_entry(person, name, image_size)
                        if person.area >= MIN_VISIBLE_AREA
                        else None
                    )
                    if entry is not None:
                        entries.append(entry)
                        head_boxes.append(person.head_box)
            _write_json(tmp / "annotations" / f"mpii_{split}.json", entries)
            if split == "val":
                _write_mpii_gt(tmp / "annotations" / "mpii_gt_val.mat", entries, head_boxes)
            summary[f"{split}_images"] = count
            summary[f"{split}_persons"] = len(entries)
    return summary
